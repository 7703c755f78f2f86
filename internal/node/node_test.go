package node

import (
	"slices"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"google.golang.org/protobuf/proto"
)

// fakeEnv records sends and holds store writes until the test completes them.
type fakeEnv struct {
	h      *harness
	rank   int32
	st     *kvstore.Mem
	writes []pendingWrite
	sent   []*minimonv1.PeerEnvelope // every send, in order
	out    []*minimonv1.PeerEnvelope // not yet delivered
	syncs  []int32
}

type pendingWrite struct {
	tx   *minimonv1.Transaction
	done func()
}

func (e *fakeEnv) Persist(tx *minimonv1.Transaction, done func()) {
	e.writes = append(e.writes, pendingWrite{tx, done})
}

func (e *fakeEnv) Send(to int32, env *minimonv1.PeerEnvelope) {
	c := proto.Clone(env).(*minimonv1.PeerEnvelope)
	e.sent = append(e.sent, c)
	e.out = append(e.out, c)
	e.h.to[c] = to
}

func (e *fakeEnv) Sync(from int32) { e.syncs = append(e.syncs, from) }

// flush completes the oldest n writes (all when n < 0), in issue order.
func (e *fakeEnv) flush(t *testing.T, n int) {
	t.Helper()
	for n != 0 && len(e.writes) > 0 {
		w := e.writes[0]
		e.writes = e.writes[1:]
		if err := e.st.Apply(w.tx); err != nil {
			t.Fatal(err)
		}
		w.done()
		n--
	}
}

type harness struct {
	t     *testing.T
	now   time.Time
	nodes []*Node
	envs  []*fakeEnv
	to    map[*minimonv1.PeerEnvelope]int32
}

func testConfig(rank int32) Config {
	p := paxos.DefaultConfig()
	p.Incarnation = uint64(rank)*2 + 1
	return Config{
		Rank: rank, Members: []int32{0, 1, 2}, MonmapEpoch: 1,
		Paxos: p,
		Election: election.Config{
			ElectionTimeout: 300 * time.Millisecond, LeaseAckTimeout: p.LeaseAckTimeout,
			RenewInterval: p.RenewInterval, ClockRateError: p.ClockRateError,
		},
		ProbeTimeout: 250 * time.Millisecond,
	}
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, now: time.Unix(1000, 0), to: map[*minimonv1.PeerEnvelope]int32{}}
	for r := int32(0); r < 3; r++ {
		e := &fakeEnv{h: h, rank: r, st: kvstore.NewMem()}
		cfg := testConfig(r)
		cfg.Clock = func() time.Time { return h.now }
		n, err := New(cfg, e.st, e, h.now)
		if err != nil {
			t.Fatal(err)
		}
		h.nodes, h.envs = append(h.nodes, n), append(h.envs, e)
	}
	for _, n := range h.nodes {
		n.Start(h.now)
	}
	return h
}

// deliver hands every queued message of every node to its receiver, optionally filtered (a
// filtered-out message stays queued); it reports how many it delivered.
func (h *harness) deliver(keep func(from, to int32, m *minimonv1.PeerEnvelope) bool) int {
	k := 0
	for _, e := range h.envs {
		var rest []*minimonv1.PeerEnvelope
		msgs := e.out
		e.out = nil
		for _, m := range msgs {
			to := h.to[m]
			if keep != nil && !keep(e.rank, to, m) {
				rest = append(rest, m)
				continue
			}
			h.nodes[to].Step(h.now, m)
			k++
		}
		e.out = append(rest, e.out...)
	}
	return k
}

func (h *harness) tick(d time.Duration) {
	h.now = h.now.Add(d)
	for _, n := range h.nodes {
		n.Tick(h.now)
	}
}

// settle delivers everything and completes every write until quiet.
func (h *harness) settle() {
	for i := 0; i < 100; i++ {
		k := h.deliver(nil)
		for _, e := range h.envs {
			k += len(e.writes)
			e.flush(h.t, -1)
		}
		if k == 0 {
			return
		}
	}
}

func (h *harness) stable() int {
	h.t.Helper()
	for i := 0; i < 300; i++ {
		h.tick(10 * time.Millisecond)
		h.settle()
		l := -1
		ok := true
		for r, n := range h.nodes {
			switch n.Role() {
			case Leader:
				l = r
			case Peon:
			default:
				ok = false
			}
		}
		if ok && l >= 0 && h.nodes[l].Paxos().Writeable() {
			return l
		}
	}
	h.t.Fatalf("no stable quorum")
	return -1
}

func paxosOp(m *minimonv1.PeerEnvelope, op minimonv1.PaxosMessage_Op) bool {
	return m.GetPaxos() != nil && m.GetPaxos().GetOp() == op
}

func countSent(e *fakeEnv, pred func(*minimonv1.PeerEnvelope) bool) int {
	k := 0
	for _, m := range e.sent {
		if pred(m) {
			k++
		}
	}
	return k
}

// An election epoch write is durable before any message naming that epoch leaves.
func TestElectionPersistBeforeMessages(t *testing.T) {
	h := newHarness(t)
	// Tick until some node has an epoch write pending; its PROPOSEs must wait for it.
	for i := 0; i < 100; i++ {
		h.tick(10 * time.Millisecond)
		h.deliver(func(_, _ int32, m *minimonv1.PeerEnvelope) bool { return m.GetElection() != nil })
		for r, e := range h.envs {
			for _, w := range e.writes {
				ep, ok := election.PersistedEpoch(w.tx)
				if !ok {
					continue
				}
				// No message of this epoch may have left yet.
				if c := countSent(e, func(m *minimonv1.PeerEnvelope) bool {
					return m.GetElection() != nil && m.GetElection().GetEpoch() >= ep
				}); c != 0 {
					t.Fatalf("node %d sent %d election messages of epoch %d before the write", r, c, ep)
				}
				before := len(e.sent)
				e.flush(t, 1)
				if len(e.sent) == before {
					t.Fatalf("node %d sent nothing after its epoch %d write completed", r, ep)
				}
				return
			}
		}
	}
	t.Fatal("no election epoch write seen")
}

// A peon's ACCEPT (a paxos Ready's Messages) leaves only after that Ready's Persist is durable.
func TestPaxosMessagesAfterPersist(t *testing.T) {
	h := newHarness(t)
	l := h.stable()
	p := (l + 1) % 3
	done := 0
	if err := h.nodes[l].Propose(h.now, mustTx(t), func(r paxos.Result) {
		if r.Err == nil {
			done++
		}
	}); err != nil {
		t.Fatal(err)
	}
	// Deliver the BEGIN to p only; p must write before accepting.
	h.deliver(func(from, to int32, m *minimonv1.PeerEnvelope) bool {
		return int(from) == l && int(to) == p && paxosOp(m, minimonv1.PaxosMessage_BEGIN)
	})
	ep := h.envs[p]
	if len(ep.writes) == 0 {
		t.Fatal("peon issued no write for BEGIN")
	}
	isAccept := func(m *minimonv1.PeerEnvelope) bool { return paxosOp(m, minimonv1.PaxosMessage_ACCEPT) }
	if c := countSent(ep, isAccept); c != 0 {
		t.Fatalf("peon sent ACCEPT before its write was durable")
	}
	ep.flush(t, 1)
	if c := countSent(ep, isAccept); c != 1 {
		t.Fatalf("peon sent %d ACCEPTs after its write, want 1", c)
	}
	h.settle()
	if done != 1 {
		t.Fatalf("proposal not completed")
	}
}

// A paxos message of a new epoch that arrives while this member's election epoch write is in
// flight is held, then handled once the outcome has been acted on (without a resend).
func TestPaxosHeldDuringEpochWrite(t *testing.T) {
	h := newHarness(t)
	// Let the election run but hold node 2's epoch writes.
	for i := 0; i < 200; i++ {
		h.tick(10 * time.Millisecond)
		h.deliver(nil)
		for r := 0; r < 2; r++ {
			h.envs[r].flush(t, -1)
		}
		// Node 2 acks (its odd epoch write completes) but its even epoch write is held.
		for e2 := h.envs[2]; len(e2.writes) > 0; {
			if ep, ok := election.PersistedEpoch(e2.writes[0].tx); ok && ep%2 == 0 && ep > 0 {
				break
			}
			e2.flush(t, 1)
		}
		if h.nodes[0].Role().InQuorum() && h.nodes[1].Role().InQuorum() && len(h.envs[2].writes) > 0 {
			break
		}
	}
	l := -1
	for r := 0; r < 2; r++ {
		if h.nodes[r].Role() == Leader {
			l = r
		}
	}
	if l < 0 {
		t.Fatalf("no leader among 0 and 1: %v %v", h.nodes[0].Role(), h.nodes[1].Role())
	}
	n2, e2 := h.nodes[2], h.envs[2]
	if len(e2.writes) == 0 {
		t.Skip("node 2 had no epoch write in flight in this schedule")
	}
	// Deliver whatever reached node 2 (VICTORY, COLLECT...) while its write is in flight.
	h.deliver(func(_, to int32, _ *minimonv1.PeerEnvelope) bool { return to == 2 })
	if len(n2.deferred) == 0 {
		t.Fatalf("no paxos message held at node 2 (role %v)", n2.Role())
	}
	isLast := func(m *minimonv1.PeerEnvelope) bool { return paxosOp(m, minimonv1.PaxosMessage_LAST) }
	if countSent(e2, isLast) != 0 {
		t.Fatal("node 2 answered COLLECT before its epoch write")
	}
	for i := 0; i < 10 && len(e2.writes) > 0; i++ {
		e2.flush(t, 1)
	}
	if n2.Role() != Peon {
		t.Fatalf("node 2 is %v after its writes, want peon", n2.Role())
	}
	if len(n2.deferred) != 0 {
		t.Fatalf("node 2 still holds %d messages", len(n2.deferred))
	}
	if countSent(e2, isLast) == 0 {
		t.Fatal("the held COLLECT was not handled after the epoch write")
	}
}

// Admission elections are at least AdmitInterval apart.
func TestAdmissionRateLimit(t *testing.T) {
	h := newHarness(t)
	l := h.stable()
	n := h.nodes[l]
	started := 0
	n.OnRoleChange(func(old, new Role, why string) {
		if old == Leader && new == Electing {
			started++
		}
	})
	out := (l + 1) % 3
	outsider := func() *minimonv1.PeerEnvelope {
		return &minimonv1.PeerEnvelope{FromRank: int32(out), Body: &minimonv1.PeerEnvelope_Election{
			Election: &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE, From: int32(out),
				To: int32(l), Epoch: n.Elector().Epoch() + 1, MonmapEpoch: 1, Nonce: 7, LastCommitted: 1}}}
	}
	n.Step(h.now, outsider())
	h.settle()
	if started != 1 {
		t.Fatalf("first admission request started %d elections, want 1", started)
	}
	if n.Role() != Leader {
		t.Fatalf("leader %d is %v after the admission election", l, n.Role())
	}
	// Within AdmitInterval of the first admission: no second one.
	h.now = h.now.Add(n.cfg.AdmitInterval / 2)
	n.Step(h.now, outsider())
	h.settle()
	if started != 1 {
		t.Fatalf("admission within AdmitInterval started another election (%d)", started)
	}
	h.now = n.lastAdmit.Add(n.cfg.AdmitInterval)
	n.Step(h.now, outsider())
	h.settle()
	if started != 2 {
		t.Fatalf("admission after AdmitInterval: %d elections, want 2", started)
	}
}

// A probe from a member whose history starts after ours ends asks the driver for a full sync;
// SyncDone brings the node back to probing on rebuilt cores.
func TestProbeFullSync(t *testing.T) {
	h := newHarness(t)
	n, e := h.nodes[1], h.envs[1]
	n.Step(h.now, &minimonv1.PeerEnvelope{FromRank: 0, Body: &minimonv1.PeerEnvelope_Probe{
		Probe: &minimonv1.ProbeMessage{Op: minimonv1.ProbeMessage_REPLY, Rank: 0, FirstCommitted: 50, LastCommitted: 90}}})
	h.settle()
	if !slices.Equal(e.syncs, []int32{0}) || n.Role() != Synchronizing {
		t.Fatalf("syncs %v role %v, want a sync from 0", e.syncs, n.Role())
	}
	old := n.Paxos()
	if err := n.SyncDone(h.now); err != nil {
		t.Fatal(err)
	}
	if n.Role() != Probing || n.Paxos() == old {
		t.Fatalf("after SyncDone: role %v, rebuilt %v", n.Role(), n.Paxos() != old)
	}
}

func TestStopFailsPending(t *testing.T) {
	h := newHarness(t)
	l := h.stable()
	var got []error
	for i := 0; i < 3; i++ {
		if err := h.nodes[l].Propose(h.now, mustTx(t), func(r paxos.Result) { got = append(got, r.Err) }); err != nil {
			t.Fatal(err)
		}
	}
	h.nodes[l].Stop()
	if len(got) != 3 {
		t.Fatalf("%d results after Stop, want 3", len(got))
	}
	for _, err := range got {
		if err != paxos.ErrStepDown {
			t.Fatalf("result %v, want ErrStepDown", err)
		}
	}
	if err := h.nodes[(l+1)%3].Propose(h.now, mustTx(t), func(paxos.Result) {}); err != paxos.ErrNotLeader {
		t.Fatalf("propose on a peon: %v", err)
	}
}

func mustTx(t *testing.T) []byte {
	t.Helper()
	b, err := proto.Marshal(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{
		Kind: minimonv1.StoreOp_PUT, Bucket: "kv", Key: []byte("k"), Value: []byte("v")}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A peer more than paxos_max_join_drift versions ahead (its log still covers ours) is a reason to
// sync too; one within the drift is left to the election's share_state.
func TestProbeDriftSync(t *testing.T) {
	reply := func(fc, lc uint64) *minimonv1.PeerEnvelope {
		return &minimonv1.PeerEnvelope{FromRank: 0, Body: &minimonv1.PeerEnvelope_Probe{
			Probe: &minimonv1.ProbeMessage{Op: minimonv1.ProbeMessage_REPLY, Rank: 0, FirstCommitted: fc, LastCommitted: lc}}}
	}
	h := newHarness(t)
	n, e := h.nodes[1], h.envs[1]
	drift := n.cfg.Paxos.MaxJoinDrift
	if drift == 0 {
		t.Fatal("the harness runs without paxos_max_join_drift")
	}
	n.Step(h.now, reply(1, drift)) // lc 0 + drift: within the drift
	h.settle()
	if len(e.syncs) != 0 || n.Role() == Synchronizing {
		t.Fatalf("synced from a peer within the drift: syncs %v role %v", e.syncs, n.Role())
	}
	n.Step(h.now, reply(1, drift+1))
	h.settle()
	if !slices.Equal(e.syncs, []int32{0}) || n.Role() != Synchronizing {
		t.Fatalf("syncs %v role %v, want a sync from 0 past the drift", e.syncs, n.Role())
	}
}

// An outsider more than paxos_max_join_drift behind (it will sync first) gets no admission
// election yet: it could not take part, and it would need a second one after its sync. Once it
// reports a last_committed within the drift, it is admitted.
func TestAdmissionWaitsForCatchUp(t *testing.T) {
	h := newHarness(t)
	l := h.stable()
	n := h.nodes[l]
	drift := n.cfg.Paxos.MaxJoinDrift
	for i := uint64(0); i < drift+2; i++ {
		done := false
		if err := n.Propose(h.now, mustTx(t), func(r paxos.Result) { done = r.Err == nil }); err != nil {
			t.Fatal(err)
		}
		h.settle()
		if !done {
			t.Fatalf("proposal %d not committed", i)
		}
	}
	lc := n.Paxos().LastCommitted()
	if lc <= drift {
		t.Fatalf("leader lc %d, want above the drift %d", lc, drift)
	}
	started := 0
	n.OnRoleChange(func(old, new Role, why string) {
		if old == Leader && new == Electing {
			started++
		}
	})
	out := (l + 1) % 3
	prevote := func(itsLC uint64) *minimonv1.PeerEnvelope {
		return &minimonv1.PeerEnvelope{FromRank: int32(out), Body: &minimonv1.PeerEnvelope_Election{
			Election: &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE, From: int32(out),
				To: int32(l), Epoch: n.Elector().Epoch() + 1, MonmapEpoch: 1, Nonce: 7, LastCommitted: itsLC}}}
	}
	n.Step(h.now, prevote(lc-drift-1))
	h.settle()
	if started != 0 {
		t.Fatalf("an outsider %d versions behind (drift %d) started %d admission elections", drift+1, drift, started)
	}
	n.Step(h.now, prevote(lc-drift))
	h.settle()
	if started != 1 {
		t.Fatalf("an outsider within the drift started %d admission elections, want 1", started)
	}
}
