package paxos

import (
	"errors"
	"math/rand"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func isOp(op minimonv1.PaxosMessage_Op) func(*minimonv1.PaxosMessage) bool {
	return func(m *minimonv1.PaxosMessage) bool { return m.Op == op }
}

// Difference 2: a silent peon delays a commit by at most its lease bound, never forces an
// election, and is caught up and re-granted once it answers again.
func TestDiff2_SilentPeonNoStallNoElection(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.run(300*ms, 10*ms)
	if !c.nodes[2].p.Readable(c.now) {
		t.Fatal("peon 2 should hold a lease")
	}
	c.isolate(2, true)
	t0 := c.now
	id := c.propose(kvPut("a", "1"))
	c.stabilize()
	var committedAt time.Time
	for i := 0; i < 100; i++ {
		if r, ok := c.nodes[0].results[id]; ok {
			if r.Err != nil {
				t.Fatalf("result %+v", r)
			}
			committedAt = c.now
			break
		}
		c.run(5*ms, 5*ms)
	}
	if committedAt.IsZero() {
		t.Fatalf("no commit with one silent peon (%v)", c)
	}
	// Safety: peon 2's lease (same clock here) ended before the commit condition held.
	if end := c.nodes[2].p.leaseEnd; committedAt.Before(end) {
		t.Fatalf("committed at %v while peon 2's lease runs to %v", committedAt.Sub(t0), end.Sub(t0))
	}
	if stall := committedAt.Sub(t0); stall > c.cfg(0).Lease*102/100 {
		t.Fatalf("stall %v beyond one lease bound", stall)
	}
	// Later writes do not wait: peon 2 has no grant any more.
	id2 := c.propose(kvPut("b", "2"))
	c.stabilize()
	if r, ok := c.nodes[0].results[id2]; !ok || r.Err != nil {
		t.Fatalf("second write stalled: %+v %v", r, ok)
	}
	// Heal before peon 2's own lease timeout: it is caught up by share_state and re-granted.
	c.isolate(2, false)
	c.run(300*ms, 10*ms)
	if lc := c.nodes[2].p.LastCommitted(); lc != c.leaderP().LastCommitted() {
		t.Fatalf("peon 2 lc %d, leader %d", lc, c.leaderP().LastCommitted())
	}
	if !c.nodes[2].p.Readable(c.now) {
		t.Fatal("peon 2 not re-granted a lease after catching up")
	}
	for _, r := range c.members {
		if len(c.nodes[r].bootstrap) != 0 {
			t.Fatalf("node %d bootstrapped: %v", r, c.nodes[r].bootstrap)
		}
	}
	c.checkAgreement()
}

// A peon that stays silent longer than LT bootstraps itself; the leader keeps serving.
func TestSpec5_9_SilentPeonLeaseTimeoutLeaderStays(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.isolate(2, true)
	for range 10 {
		c.propose(kvPut("a", "x"))
		c.run(300*ms, 10*ms)
	}
	if len(c.nodes[0].bootstrap) != 0 || len(c.nodes[1].bootstrap) != 0 {
		t.Fatalf("leader or peon 1 bootstrapped: %v %v", c.nodes[0].bootstrap, c.nodes[1].bootstrap)
	}
	if got := c.nodes[2].bootstrap; len(got) != 1 || got[0] != "lease timeout" {
		t.Fatalf("peon 2 bootstrap = %v, want [lease timeout]", got)
	}
	if c.leaderP().LastCommitted() != 10 {
		t.Fatalf("lc = %d", c.leaderP().LastCommitted())
	}
}

func TestSpec5_9_LeaderStepsDownWithoutMajority(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.isolate(0, true)
	id := c.propose(kvPut("a", "1"))
	c.run(700*ms, 10*ms)
	got := c.nodes[0].bootstrap
	if len(got) != 1 || !strings.Contains(got[0], "lease ack timeout") {
		t.Fatalf("leader bootstrap = %v", got)
	}
	if r := c.nodes[0].results[id]; !errors.Is(r.Err, ErrStepDown) {
		t.Fatalf("in-flight proposal result = %+v, want ErrStepDown", r)
	}
	if c.leaderP().Readable(c.now) {
		t.Fatal("stepped-down leader readable")
	}
}

func TestSpec5_9_CollectTimeout(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.setCut(0, 2, true)
	c.elect(0, 0, 1, 2)
	if c.leaderP().Writeable() {
		t.Fatal("collect finished without peon 2")
	}
	c.run(1100*ms, 50*ms)
	if got := c.nodes[0].bootstrap; len(got) != 1 || got[0] != "collect timeout" {
		t.Fatalf("bootstrap = %v", got)
	}
}

func TestSpec5_9_AcceptTimeout(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.LeaseAckTimeout = 3 * time.Second })
	c.elect(0, 0, 1, 2)
	// Peons keep acking leases but no ACCEPT reaches the leader.
	c.dropIf = isOp(minimonv1.PaxosMessage_ACCEPT)
	c.propose(kvPut("a", "1"))
	c.run(1100*ms, 50*ms)
	if got := c.nodes[0].bootstrap; len(got) != 1 || got[0] != "accept timeout" {
		t.Fatalf("bootstrap = %v", got)
	}
}

func TestSpec5_9_OwnWriteTimeout(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.holdAdv = true
	c.propose(kvPut("a", "1"))
	c.processAll() // the leader's accept is "being written" and never completes
	c.now = c.now.Add(1100 * ms)
	c.leaderP().Tick(c.now)
	if !c.leaderP().HasReady() {
		t.Fatal("no Ready with the bootstrap while a write is outstanding")
	}
	rd := c.leaderP().Ready()
	if rd.Bootstrap != "own store write timed out" || rd.Persist != nil || len(rd.Messages) != 0 {
		t.Fatalf("ready = %+v", rd)
	}
}

// Spec 5.6.1: a lagging peon is caught up at collect; a lagging leader learns from a LAST.
func TestSpec5_6_1_ShareStateAtCollect(t *testing.T) {
	t.Run("lagging peon", func(t *testing.T) {
		c := newCluster(t, 3, nil)
		c.elect(0, 0, 1)
		for range 3 {
			c.propose(kvPut("a", "x"))
			c.stabilize()
		}
		if c.nodes[2].p.LastCommitted() != 0 {
			t.Fatal("node 2 outside the quorum got values")
		}
		c.elect(0, 0, 1, 2)
		if lc := c.nodes[2].p.LastCommitted(); lc != 3 {
			t.Fatalf("node 2 lc = %d after collect, want 3", lc)
		}
		if c.get(2, "kv", "a") != "x" {
			t.Fatal("node 2 did not apply the shared values")
		}
		c.checkAgreement()
	})
	t.Run("lagging leader", func(t *testing.T) {
		c := newCluster(t, 3, nil)
		c.elect(0, 0, 1)
		for range 3 {
			c.propose(kvPut("a", "x"))
			c.stabilize()
		}
		c.elect(2, 1, 2)
		if lc := c.nodes[2].p.LastCommitted(); lc != 3 {
			t.Fatalf("leader 2 lc = %d after collect, want 3", lc)
		}
		c.propose(kvPut("b", "y"))
		c.stabilize()
		if c.get(1, "kv", "b") != "y" || c.nodes[1].p.LastCommitted() != 4 {
			t.Fatal("no commit after the leader caught up")
		}
		c.checkAgreement()
	})
}

// Spec 5.6: the leader dies after one peon accepted a value; the next leader re-proposes it.
func TestSpec5_6_RecoverUncommittedValue(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.setCut(0, 2, true)
	c.setCut(0, 1, true)
	c.propose(kvPut("k", "chosen?"))
	c.processAll()
	// Let only the BEGIN to peon 1 through.
	c.setCut(0, 1, false)
	c.deliverWhere(func(m *minimonv1.PaxosMessage) bool { return m.Op == minimonv1.PaxosMessage_BEGIN && m.To == 1 })
	c.crash(0)
	if c.storedU64(1, KeyPendingV) != 2-1 {
		t.Fatalf("peon 1 pending_v = %d", c.storedU64(1, KeyPendingV))
	}
	c.elect(1, 1, 2)
	c.run(600*ms, 10*ms)
	for _, r := range []int32{1, 2} {
		if c.get(r, "kv", "k") != "chosen?" || c.nodes[r].p.LastCommitted() != 1 {
			t.Fatalf("node %d: recovered value not committed (%v)", r, c)
		}
	}
	c.checkAgreement()
}

// Spec 5.6 step 6: among uncommitted values the highest pending_pn wins; the peon's higher
// promise forces a re-collect (step 5).
func TestSpec5_6_RecoverHighestPendingPN(t *testing.T) {
	c := newCluster(t, 3, nil)
	a, b := encodeTx(t, kvPut("k", "A")), encodeTx(t, kvPut("k", "B"))
	c.putRaw(1, map[string]uint64{KeyPendingV: 1, KeyPendingPN: 100, KeyAcceptedPN: 100}, map[uint64][]byte{1: a})
	c.putRaw(2, map[string]uint64{KeyPendingV: 1, KeyPendingPN: 201, KeyAcceptedPN: 201}, map[uint64][]byte{1: b})
	c.elect(0, 0, 1, 2)
	if n := len(c.sentOps(minimonv1.PaxosMessage_COLLECT)); n != 4 {
		t.Fatalf("%d COLLECTs, want 4 (a re-collect after the higher promise)", n)
	}
	if got := c.storedU64(0, KeyLastPN); got != 300 {
		t.Fatalf("last_pn = %d, want 300", got)
	}
	for _, r := range c.members {
		if got := c.get(r, "kv", "k"); got != "B" {
			t.Fatalf("node %d k = %q, want B (highest pending_pn)", r, got)
		}
	}
	c.checkAgreement()
}

func TestSpec5_6_HigherPromiseForcesRecollect(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.putRaw(1, map[string]uint64{KeyAcceptedPN: 1000}, nil)
	c.elect(0, 0, 1, 2)
	if got := c.storedU64(0, KeyLastPN); got != 1100 {
		t.Fatalf("last_pn = %d, want 1100", got)
	}
	c.propose(kvPut("a", "1"))
	c.stabilize()
	if c.get(1, "kv", "a") != "1" {
		t.Fatal("no commit after re-collect")
	}
}

// Rule 3: P's lease ends at send(m) + D, D <= min(d, (leaderEnd-now)/rho).
func TestRule3_PeonLeaseEndsAtSendPlusD(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	t0 := c.now
	cfg := c.cfg(0)
	// Next renewal at t0 + r; the grant names node 1's LEASE_ACK produced at t0.
	c.now = t0.Add(cfg.RenewInterval)
	c.leaderP().Tick(c.now)
	c.process(0)
	var lease *minimonv1.PaxosMessage
	for _, m := range c.queue {
		if m.Op == minimonv1.PaxosMessage_LEASE && m.To == 1 {
			lease = m
		}
	}
	if lease == nil || lease.LeaseNanos <= 0 {
		t.Fatalf("no grant to node 1: %v", lease)
	}
	wantD := time.Duration(float64(t0.Add(cfg.Lease).Sub(c.now)) / 1.01)
	if d := time.Duration(lease.LeaseNanos); d != wantD {
		t.Fatalf("D = %v, want (leaderEnd-now)/rho = %v", d, wantD)
	}
	var named *minimonv1.PaxosMessage
	for _, m := range c.sent {
		if m.From == 1 && m.Seq == lease.LeaseSeq {
			named = m
		}
	}
	if named == nil || named.Op != minimonv1.PaxosMessage_LEASE_ACK {
		t.Fatalf("grant names %v", named)
	}
	c.now = c.now.Add(40 * ms)          // delivery delay does not lengthen the lease
	c.nodes[1].p.leaseEnd = time.Time{} // forget the first grant (from the LAST) to see this one
	c.deliverWhere(isOp(minimonv1.PaxosMessage_LEASE))
	want := c.sentAt[named].Add(wantD)
	if got := c.nodes[1].p.LeaseEnd(); !got.Equal(want) {
		t.Fatalf("peon lease end %v, want send(m)+D = %v", got.Sub(t0), want.Sub(t0))
	}
	if b := c.leaderP().bound[1]; b.Before(want) {
		t.Fatalf("leader bound %v before the peon's lease end %v", b.Sub(t0), want.Sub(t0))
	}
	// A LEASE naming a message the peon never sent grants nothing.
	c.nodes[2].p.leaseEnd = time.Time{}
	fake := &minimonv1.PaxosMessage{Op: minimonv1.PaxosMessage_LEASE, From: 0, To: 2, Epoch: c.epoch,
		Incarnation: c.cfg(0).Incarnation + uint64(epoch0.UnixNano()), Seq: 1 << 40,
		LastCommitted: c.nodes[2].p.lc, LeaseSeq: 1 << 40, LeaseNanos: int64(time.Second)}
	c.nodes[2].p.Step(c.now, fake)
	if c.nodes[2].p.Readable(c.now) {
		t.Fatal("peon took a grant naming an unknown message")
	}
}

func TestRule4_ReadableOnlyWhileLeaseValid(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	for _, r := range c.members {
		if !c.nodes[r].p.Readable(c.now) {
			t.Fatalf("node %d not readable right after election", r)
		}
	}
	// Nothing is delivered any more: every lease runs out within d.
	c.isolate(0, true)
	end := c.now.Add(c.cfg(0).Lease)
	c.run(c.cfg(0).Lease, 10*ms)
	for _, r := range c.members {
		if c.nodes[r].p.Readable(end) {
			t.Fatalf("node %d readable at t0+d without renewal", r)
		}
	}
}

func TestRule4_PeonDropsLeaseAtBegin(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.process(0)
	if c.leaderP().Readable(c.now) {
		t.Fatal("leader readable with its accepted value above lc")
	}
	c.deliverWhere(isOp(minimonv1.PaxosMessage_BEGIN))
	for _, r := range []int32{1, 2} {
		if c.nodes[r].p.Readable(c.now) {
			t.Fatalf("peon %d readable after BEGIN", r)
		}
		if !c.nodes[r].p.LeaseEnd().IsZero() {
			t.Fatalf("peon %d kept its lease at BEGIN", r)
		}
	}
	c.stabilize()
	for _, r := range c.members {
		if !c.nodes[r].p.Readable(c.now) {
			t.Fatalf("node %d not readable after commit and lease", r)
		}
	}
}

// Rule 4: the leader serves nothing from the commit condition until the commit is applied.
func TestRule4_LeaderNotReadableBeforeApply(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	id := c.propose(kvPut("a", "1"))
	c.process(0)
	c.holdAdv = true
	c.deliverWhere(isOp(minimonv1.PaxosMessage_BEGIN))
	c.deliverWhere(isOp(minimonv1.PaxosMessage_ACCEPT))
	p := c.leaderP()
	if r, ok := c.nodes[0].results[id]; !ok || r.Err != nil {
		t.Fatalf("commit condition not reached: %+v", r)
	}
	if p.Readable(c.now) {
		t.Fatal("leader readable between commit condition and apply")
	}
	c.holdAdv = false
	p.Advance(c.now, c.nodes[0].lastRd)
	if !p.Readable(c.now) {
		t.Fatal("leader not readable after apply")
	}
}

// Rule 6: a new leader grants nothing, serves nothing and commits nothing before release.
func TestRule6_NothingBeforeRelease(t *testing.T) {
	c := newCluster(t, 3, nil)
	release := c.now.Add(300 * ms)
	c.electAt(0, release, 0, 1, 2)
	id := c.propose(kvPut("a", "1"))
	for c.now.Before(release) {
		for _, r := range c.members {
			if c.nodes[r].p.Readable(c.now) {
				t.Fatalf("node %d readable before release", r)
			}
		}
		if _, ok := c.nodes[0].results[id]; ok {
			t.Fatal("committed before release")
		}
		c.run(10*ms, 10*ms)
	}
	for _, m := range c.sentOps(minimonv1.PaxosMessage_LEASE) {
		if m.LeaseNanos > 0 && c.sentAt[m].Before(release) {
			t.Fatalf("grant at %v before release", c.sentAt[m].Sub(epoch0))
		}
	}
	if r, ok := c.nodes[0].results[id]; !ok || r.Err != nil {
		t.Fatalf("not committed at release: %+v", r)
	}
	for _, r := range c.members {
		if !c.nodes[r].p.Readable(c.now) {
			t.Fatalf("node %d not readable after release", r)
		}
	}
}

func TestRule6_Horizon(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.nodes[0].p.Restart(c.now)
	c.start(0, false)
	h := c.nodes[0].p.Horizon()
	if want := c.now.Add(time.Duration(float64(c.cfg(0).Lease) * 1.01)); !h.Equal(want) {
		t.Fatalf("start horizon %v, want now + d*rho", h.Sub(c.now))
	}
	if !c.nodes[1].p.Horizon().IsZero() {
		t.Fatal("fresh cluster has a start horizon")
	}
	c.elect(0, 0, 1, 2) // releaseAt = now, but H is later
	if c.leaderP().Readable(c.now) {
		t.Fatal("leader readable before its own horizon")
	}
	if c.nodes[1].p.Horizon().Before(c.now) {
		t.Fatal("peon horizon not raised by its LAST")
	}
	c.run(600*ms, 10*ms)
	if !c.leaderP().Readable(c.now) {
		t.Fatal("leader not readable after its horizon")
	}
	h1 := c.nodes[1].p.Horizon()
	c.nodes[1].p.Restart(c.now)
	if !c.nodes[1].p.Horizon().Equal(h1) {
		t.Fatal("Restart lost H")
	}
}

// Rule 1: duplicates, stale seqs, other epochs and strangers are dropped.
func TestRule1_DuplicateAndStaleMessagesIgnored(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.process(0)
	var begin *minimonv1.PaxosMessage
	for _, m := range c.queue {
		if m.Op == minimonv1.PaxosMessage_BEGIN && m.To == 1 {
			begin = m
		}
	}
	p1 := c.nodes[1].p
	p1.Step(c.now, begin)
	rd := p1.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].Op != minimonv1.PaxosMessage_ACCEPT {
		t.Fatalf("first BEGIN: %+v", rd)
	}
	p1.Advance(c.now, rd)
	p1.Step(c.now, begin) // duplicate
	if p1.HasReady() {
		t.Fatal("duplicate BEGIN answered")
	}
	other := proto.Clone(begin).(*minimonv1.PaxosMessage)
	other.Seq += 1000
	other.Epoch++
	p1.Step(c.now, other) // other epoch
	other.Epoch = begin.Epoch
	other.From = 2 // not the leader
	p1.Step(c.now, other)
	if p1.HasReady() {
		t.Fatal("message of another epoch or sender answered")
	}
	// The leader ignores a replayed ACCEPT too (seq), so counting is per message.
	c.queue = nil
	acc := rd.Messages[0]
	c.leaderP().Step(c.now, acc)
	c.leaderP().Step(c.now, acc)
	if n := len(c.leaderP().accepted); n != 1 {
		t.Fatalf("accepted = %v", c.leaderP().accepted)
	}
}

// Spec 5.11: the leader trims by proposing the erase; every member trims the same way and
// PaxosMin versions are kept.
func TestSpec5_11_TrimKeepsPaxosMin(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.PaxosMin, cfg.PaxosTrimMin, cfg.PaxosTrimMax = 5, 2, 3 })
	c.elect(0, 0, 1, 2)
	for i := range 30 {
		c.propose(kvPut("a", string(rune('a'+i))))
		c.stabilize()
	}
	p := c.leaderP()
	if p.FirstCommitted() <= 1 {
		t.Fatal("never trimmed")
	}
	for _, r := range c.members {
		q := c.nodes[r].p
		if q.FirstCommitted() != p.FirstCommitted() || q.LastCommitted() != p.LastCommitted() {
			t.Fatalf("node %d fc/lc %d/%d, leader %d/%d", r, q.fc, q.lc, p.fc, p.lc)
		}
		if q.lc-q.fc < 5 {
			t.Fatalf("node %d keeps %d versions, want >= paxos_min", r, q.lc-q.fc)
		}
		if q.lc-q.fc > 5+2+1 {
			t.Fatalf("node %d keeps %d versions, trim overdue", r, q.lc-q.fc)
		}
		if got := c.storedU64(r, KeyFirstCommitted); got != q.fc {
			t.Fatalf("stored fc %d, memory %d", got, q.fc)
		}
		for v := uint64(1); v <= q.lc; v++ {
			b, _ := c.nodes[r].st.Get(Bucket, U64(v))
			if (v >= q.fc) != (b != nil) {
				t.Fatalf("node %d version %d present=%v with fc %d", r, v, b != nil, q.fc)
			}
		}
	}
	c.checkAgreement()
}

// Rule 8: a value that ends the epoch makes every member bootstrap after applying it; no LEASE
// at or after that version.
func TestRule8_EndsEpochBootstrap(t *testing.T) {
	ends := func(val []byte) bool {
		tx := decodeValue(val)
		for _, op := range tx.GetOps() {
			if op.Bucket == "monmap" {
				return true
			}
		}
		return false
	}
	c := newCluster(t, 3, func(cfg *Config) { cfg.EndsEpoch = ends })
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.stabilize()
	id := c.propose(&minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: "monmap", Key: []byte("m"), Value: []byte("2")})
	c.stabilize()
	c.run(300*ms, 10*ms)
	if r := c.nodes[0].results[id]; r.Err != nil || r.Version != 2 {
		t.Fatalf("result %+v", r)
	}
	for _, r := range c.members {
		if got := c.nodes[r].bootstrap; len(got) != 1 || got[0] != "member map changed" {
			t.Fatalf("node %d bootstrap = %v", r, got)
		}
		if c.get(r, "monmap", "m") != "2" {
			t.Fatalf("node %d did not apply the value", r)
		}
		if c.nodes[r].p.Readable(c.now) {
			t.Fatalf("node %d readable after the epoch ended", r)
		}
	}
	for _, m := range c.sentOps(minimonv1.PaxosMessage_LEASE) {
		if m.LastCommitted >= 2 {
			t.Fatalf("LEASE at version %d after the epoch-ending value", m.LastCommitted)
		}
	}
}

func TestRestartedLeaderNewIncarnation(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.stabilize()
	c.crash(0)
	c.now = c.now.Add(time.Second)
	c.start(0, false)
	c.electAt(0, c.now, 0, 1, 2)
	c.run(600*ms, 10*ms)
	c.propose(kvPut("a", "2"))
	c.stabilize()
	if c.get(2, "kv", "a") != "2" || c.nodes[2].p.LastCommitted() != 2 {
		t.Fatalf("restarted leader cannot commit (%v)", c)
	}
}

func TestValidateRejectsBadTimings(t *testing.T) {
	good := testConfig(0, []int32{0, 1, 2})
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	cases := map[string]func(*Config){
		"e zero":                 func(c *Config) { c.ClockRateError = 0 },
		"e too big":              func(c *Config) { c.ClockRateError = 0.06 },
		"renew too long":         func(c *Config) { c.RenewInterval = 130 * ms },
		"LT not above d*rho":     func(c *Config) { c.LeaseAckTimeout = 505 * ms },
		"LT-r not above r":       func(c *Config) { c.RenewInterval, c.LeaseAckTimeout = 100*ms, 190*ms; c.Lease = 150 * ms },
		"accept below 2d":        func(c *Config) { c.AcceptTimeout = 999 * ms },
		"no members":             func(c *Config) { c.Members = nil },
		"rank not a member":      func(c *Config) { c.Rank = 7 },
		"duplicate member":       func(c *Config) { c.Members = []int32{0, 1, 1} },
		"zero incarnation":       func(c *Config) { c.Incarnation = 0 },
		"paxos_min zero":         func(c *Config) { c.PaxosMin = 0 },
		"paxos_trim_max zero":    func(c *Config) { c.PaxosTrimMax = 0 },
		"renew factor not below": func(c *Config) { c.RenewInterval = c.Lease },
	}
	for name, mut := range cases {
		cfg := testConfig(0, []int32{0, 1, 2})
		mut(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSingleMemberCluster(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.elect(0, 0)
	id := c.propose(kvPut("a", "1"))
	c.stabilize()
	if r := c.nodes[0].results[id]; r.Err != nil || r.Version != 1 {
		t.Fatalf("result %+v", r)
	}
	if !c.leaderP().Readable(c.now) {
		t.Fatal("single member not readable")
	}
	c.run(2*time.Second, 50*ms)
	if len(c.nodes[0].bootstrap) != 0 || !c.leaderP().Readable(c.now) {
		t.Fatalf("single member lost its lease: %v", c.nodes[0].bootstrap)
	}
}

// Spec 5.6 with lagging peons: the recovered value's BEGIN reaches a peon only after the
// catch-up COMMIT, so all five accept it at once (no wait for a resend).
func TestSpec5_6_RecoveredValueReachesLaggingPeons(t *testing.T) {
	c := newCluster(t, 5, nil)
	a, b := encodeTx(t, kvPut("k", "A")), encodeTx(t, kvPut("k", "B"))
	c.putRaw(1, map[string]uint64{KeyFirstCommitted: 1, KeyLastCommitted: 1, KeyPendingV: 2, KeyPendingPN: 100,
		KeyAcceptedPN: 100}, map[uint64][]byte{1: a, 2: b})
	c.elect(0, c.members...)
	for _, r := range c.members {
		if got := c.nodes[r].p.LastCommitted(); got != 2 || c.get(r, "kv", "k") != "B" {
			t.Fatalf("node %d lc %d k %q, want 2 B", r, got, c.get(r, "kv", "k"))
		}
	}
	c.checkAgreement()
}

// A BEGIN lost on the way to a peon is sent again after that peon's next LEASE_ACK.
func TestDiff2_LostBeginResent(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	lost := false
	c.dropIf = func(m *minimonv1.PaxosMessage) bool {
		if m.Op == minimonv1.PaxosMessage_BEGIN && m.To == 2 && !lost {
			lost = true
			return true
		}
		return false
	}
	c.propose(kvPut("a", "1"))
	c.stabilize()
	if c.nodes[2].p.pendingV == 1 {
		t.Fatal("BEGIN was not lost")
	}
	c.run(c.cfg(0).RenewInterval, 10*ms)
	if c.nodes[2].p.LastCommitted() != 1 || c.get(2, "kv", "a") != "1" {
		t.Fatalf("peon 2 never got the value: %v", c)
	}
	if !c.leaderP().accepted[2] && c.nodes[2].p.pendingV != 1 {
		t.Fatal("peon 2 did not accept the resent BEGIN")
	}
}

// Rule 4: a member whose commit write is still in flight serves nothing (reads come from the
// store, which still holds the previous value).
func TestRule4_NotReadableDuringCommitWrite(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.process(0)
	c.deliverWhere(isOp(minimonv1.PaxosMessage_BEGIN))
	c.deliverWhere(isOp(minimonv1.PaxosMessage_ACCEPT))
	c.holdAdv = true
	c.deliverWhere(func(m *minimonv1.PaxosMessage) bool { return m.Op == minimonv1.PaxosMessage_COMMIT && m.To == 1 })
	p1 := c.nodes[1].p
	if p1.LastCommitted() != 1 {
		t.Fatal("COMMIT not handled")
	}
	p1.leaseEnd = c.now.Add(time.Second) // as if a lease were held
	if p1.Readable(c.now) {
		t.Fatal("peon readable while its commit write is in flight")
	}
	p1.Advance(c.now, c.nodes[1].lastRd)
	if !p1.Readable(c.now) {
		t.Fatal("peon not readable once the commit is durable")
	}
}

// Spec 5.4: pns are strictly increasing, above the number they must beat, and carry the rank.
func TestSpec5_4_ProposalNumberQuick(t *testing.T) {
	f := func(rank uint8, gts []uint32) bool {
		p := &Paxos{cfg: Config{Rank: int32(rank % 100)}}
		var last uint64
		for _, g := range gts {
			pn := p.newPN(uint64(g))
			if pn <= last || pn <= uint64(g) || pn%100 != uint64(rank%100) {
				return false
			}
			last = pn
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Fatal(err)
	}
}

// Rule 5 / difference 6: with proposals waiting, the commit of v and the accept of v+1 are one
// store transaction, and BEGIN v+1 carries v so a peon commits and accepts in one write.
func TestRule5_CommitAndNextAcceptShareOneWrite(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.process(0)
	c.propose(kvPut("b", "2")) // rides the next value
	c.deliverWhere(isOp(minimonv1.PaxosMessage_BEGIN))
	c.holdAdv = true
	c.deliverWhere(isOp(minimonv1.PaxosMessage_ACCEPT))
	rd := c.nodes[0].lastRd
	keys := map[string]bool{}
	for _, op := range rd.Persist.GetOps() {
		if op.Bucket == Bucket {
			keys[string(op.Key)] = true
		}
	}
	if !keys[KeyLastCommitted] || !keys[KeyPendingV] {
		t.Fatalf("commit of 1 and accept of 2 not in one transaction: %v", keys)
	}
	for _, m := range rd.Messages {
		if m.Op == minimonv1.PaxosMessage_COMMIT {
			t.Fatal("separate COMMIT sent although BEGIN carries the value")
		}
	}
	if len(rd.Parallel) != 2 {
		t.Fatalf("BEGIN 2 not sent in parallel: %v", rd.Parallel)
	}
	for _, m := range rd.Parallel {
		if m.Op != minimonv1.PaxosMessage_BEGIN || m.LastCommitted != 1 || m.Values[1] == nil || m.Values[2] == nil {
			t.Fatalf("BEGIN = %v", m)
		}
	}
	c.holdAdv = false
	c.nodes[0].p.Advance(c.now, rd)
	c.stabilize()
	for _, r := range c.members {
		if c.nodes[r].p.LastCommitted() != 2 || c.get(r, "kv", "b") != "2" || c.get(r, "kv", "a") != "1" {
			t.Fatalf("node %d: %v", r, c)
		}
	}
	c.checkAgreement()
}

// A resent BEGIN for a value already accepted is answered without a second write.
func TestRule5_ResentBeginNoSecondWrite(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	c.propose(kvPut("a", "1"))
	c.process(0)
	var begin *minimonv1.PaxosMessage
	for _, m := range c.queue {
		if m.Op == minimonv1.PaxosMessage_BEGIN && m.To == 1 {
			begin = m
		}
	}
	p1 := c.nodes[1].p
	p1.Step(c.now, begin)
	rd := p1.Ready()
	if rd.Persist == nil {
		t.Fatal("first BEGIN not persisted")
	}
	if err := c.nodes[1].st.Apply(rd.Persist); err != nil {
		t.Fatal(err)
	}
	p1.Advance(c.now, rd)
	again := proto.Clone(begin).(*minimonv1.PaxosMessage)
	again.Seq += 10
	p1.Step(c.now, again)
	rd = p1.Ready()
	if rd.Persist != nil || len(rd.Messages) != 1 || rd.Messages[0].Op != minimonv1.PaxosMessage_ACCEPT {
		t.Fatalf("resent BEGIN: %+v", rd)
	}
}

// A COLLECT that is lost (or overtakes the VICTORY and is dropped by a member not yet in the
// epoch) is repeated every renew interval to the members that have not promised, so the epoch
// completes long before the collect timeout, without an election.
func TestSpec5_6_LostCollectRepeated(t *testing.T) {
	c := newCluster(t, 3, nil)
	lost := 0
	c.dropIf = func(m *minimonv1.PaxosMessage) bool {
		if m.Op == minimonv1.PaxosMessage_COLLECT && m.To == 2 && lost < 2 {
			lost++
			return true
		}
		return false
	}
	c.elect(0, 0, 1, 2)
	if lost != 1 || c.leaderP().promised[2] {
		t.Fatalf("COLLECT to 2 not lost (lost %d)", lost)
	}
	c.run(3*c.cfg(0).RenewInterval, 10*ms)
	if lost != 2 {
		t.Fatalf("COLLECT repeated %d times within 3 renew intervals, want a second copy", lost-1)
	}
	if !c.leaderP().promised[2] || c.leaderP().ph == phRecovering {
		t.Fatalf("collect did not complete after the repeats: %v", c)
	}
	if len(c.nodes[0].bootstrap) != 0 {
		t.Fatal("the leader bootstrapped")
	}
	c.propose(kvPut("a", "1"))
	c.stabilize()
	if c.get(2, "kv", "a") != "1" {
		t.Fatalf("peon 2 did not commit: %v", c)
	}
}
