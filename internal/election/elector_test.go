package election

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func isOp(op minimonv1.ElectionMessage_Op, from, to int32) func(m *minimonv1.ElectionMessage) bool {
	return func(m *minimonv1.ElectionMessage) bool {
		return m.GetOp() == op && m.GetFrom() == from && m.GetTo() == to
	}
}

// elect runs a cold start of n members (every one calls a pre-vote at the same moment).
func elect(t *testing.T, n int) *harness {
	t.Helper()
	h := newHarness(t, n, nil)
	for _, nd := range h.nodes {
		nd.e.CallPreVote(h.now)
	}
	h.run(5 * testET)
	return h
}

// Spec 4.4: with all up, the lowest rank wins, everyone in the quorum, in an even epoch, and
// (rule 7) without waiting for the election timeout.
func TestLowestRankWinsAllUp(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		h := elect(t, n)
		all := make([]int32, n)
		for i := range all {
			all[i] = int32(i)
		}
		epoch := h.checkQuorum(0, all)
		if epoch != 2 { // one round: higher ranks hold back for the lower contender
			t.Fatalf("n=%d: epoch %d, want 2", n, epoch)
		}
		if epoch == 0 || epoch%2 != 0 {
			t.Fatalf("n=%d: epoch %d", n, epoch)
		}
		if !h.last(0).Won {
			t.Fatalf("n=%d: leader outcome not Won", n)
		}
		if at := h.nodes[0].outcomeAt[0]; at.Sub(t0) >= testET {
			t.Fatalf("n=%d: victory after %v, want before ET (all supporters acked)", n, at.Sub(t0))
		}
		for r, nd := range h.nodes {
			if got := nd.st.epoch(t); got != epoch {
				t.Fatalf("n=%d rank %d: stored epoch %d, want %d", n, r, got, epoch)
			}
			if len(nd.outcomes) != 1 {
				t.Fatalf("n=%d rank %d: %d outcomes, want 1", n, r, len(nd.outcomes))
			}
		}
	}
}

// Spec 4.1: odd while electing, even once stable, persisted, and an odd stored epoch is bumped
// to the next even one on start.
func TestEpochOddEvenPersistedAcrossRestart(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.nodes[1].e.StartElection(h.now, 0)
	h.flushAll()
	if got := h.nodes[1].st.epoch(t); got != 1 {
		t.Fatalf("candidate stored epoch %d, want 1", got)
	}
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 1, 2))
	if got := h.nodes[2].st.epoch(t); got != 1 {
		t.Fatalf("acker stored epoch %d, want 1", got)
	}
	// Rank 2 crashes after acking: on restart the odd epoch becomes even, so it can never ack
	// another candidate in epoch 1.
	h.nodes[1].e.NoteLeaderContact(h.now) // rank 1 hears its leader: it supports no one
	h.restart(2)
	if got := h.nodes[2].e.Epoch(); got != 2 {
		t.Fatalf("restarted epoch %d, want 2", got)
	}
	if got := h.nodes[2].st.epoch(t); got != 2 {
		t.Fatalf("restarted stored epoch %d, want 2", got)
	}
	h.nodes[2].e.Step(h.now, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PROPOSE, From: 0, To: 2, Epoch: 1, MonmapEpoch: 1})
	rd := h.nodes[2].e.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].GetOp() != minimonv1.ElectionMessage_NAK ||
		rd.Messages[0].GetNakReason() != minimonv1.ElectionMessage_STALE_EPOCH || rd.Messages[0].GetEpoch() != 2 {
		t.Fatalf("restarted member answered an epoch-1 PROPOSE with %v", rd.Messages)
	}
	h.nodes[2].e.Advance(rd)
	h.nodes[2].e.CallPreVote(h.now)
	h.autoAdmit = true
	h.run(10 * testET)
	var epoch uint64
	for r, nd := range h.nodes {
		if nd.e.State() != "stable" || nd.e.Epoch()%2 != 0 || nd.st.epoch(t) != nd.e.Epoch() {
			t.Fatalf("rank %d: state %s epoch %d stored %d", r, nd.e.State(), nd.e.Epoch(), nd.st.epoch(t))
		}
		epoch = max(epoch, nd.e.Epoch())
	}
	// A stable member restarted keeps its even epoch without writing.
	epoch = h.nodes[0].e.Epoch()
	h.down[0] = true
	h.restart(0)
	if got := h.nodes[0].e.Epoch(); got != epoch {
		t.Fatalf("restarted epoch %d, want %d", got, epoch)
	}
	if h.nodes[0].e.HasReady() {
		t.Fatal("restart with an even epoch should write nothing")
	}
}

func TestNewStoredEpoch(t *testing.T) {
	st := newMemStore()
	e, err := New(testConfig(0, 3), st, t0)
	if err != nil {
		t.Fatal(err)
	}
	if e.Epoch() != 0 || e.HasReady() {
		t.Fatalf("fresh store: epoch %d ready %v", e.Epoch(), e.HasReady())
	}
	st.apply(epochTx(7))
	e, err = New(testConfig(0, 3), st, t0)
	if err != nil {
		t.Fatal(err)
	}
	rd := e.Ready()
	if ep, ok := PersistedEpoch(rd.Persist); e.Epoch() != 8 || !ok || ep != 8 {
		t.Fatalf("odd stored 7: epoch %d persist %v", e.Epoch(), rd.Persist)
	}
	st.kv[Bucket+"\x00"+KeyEpoch] = []byte{1, 2, 3}
	if _, err := New(testConfig(0, 3), st, t0); err == nil {
		t.Fatal("a 3-byte stored epoch should refuse to start")
	}
	huge := make([]byte, 8)
	binary.BigEndian.PutUint64(huge, maxEpoch)
	st.kv[Bucket+"\x00"+KeyEpoch] = huge
	if _, err := New(testConfig(0, 3), st, t0); err == nil {
		t.Fatal("an implausible stored epoch should refuse to start")
	}
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]func(c *Config){
		"zero ET":         func(c *Config) { c.ElectionTimeout = 0 },
		"LT <= r":         func(c *Config) { c.LeaseAckTimeout = c.RenewInterval },
		"negative r":      func(c *Config) { c.RenewInterval = -1 },
		"dup rank":        func(c *Config) { c.Members = []int32{0, 1, 1} },
		"own rank absent": func(c *Config) { c.Rank = 7 },
		"no members":      func(c *Config) { c.Members = nil },
		"negative rank":   func(c *Config) { c.Members = []int32{0, -1} },
		"rate error":      func(c *Config) { c.ClockRateError = 0.5 },
	}
	for name, mut := range bad {
		c := testConfig(0, 3)
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
		if _, err := New(c, newMemStore(), t0); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	c := testConfig(0, 3)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Rule 9: a member that acked rank 1 does not ack rank 0 in the same epoch; rank 0 goes another
// round with a higher epoch and wins it.
func TestOneAckPerEpoch(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.nodes[1].e.StartElection(h.now, 0)
	h.nodes[0].e.StartElection(h.now, 0)
	h.flushAll()
	if h.nodes[0].e.Epoch() != 1 || h.nodes[1].e.Epoch() != 1 {
		t.Fatal("both should propose in epoch 1")
	}
	// Rank 2 hears rank 1 first and acks it.
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 1, 2))
	if !h.deliverWhere(isOp(minimonv1.ElectionMessage_ACK, 2, 1)) {
		t.Fatal("rank 2 did not ack rank 1")
	}
	// Then rank 0's proposal for the same epoch: no ACK.
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 2))
	for _, m := range h.queue {
		if m.GetOp() == minimonv1.ElectionMessage_ACK && m.GetFrom() == 2 && m.GetTo() == 0 && m.GetEpoch() == 1 {
			t.Fatal("rank 2 acked two candidates in epoch 1")
		}
	}
	// Rank 1 now has a majority (itself and 2) in epoch 1, but it waits for every member
	// (StartElection without a quorum expects all) until ET; rank 0's proposal reaches it
	// first and it withdraws.
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 1))
	if got := h.nodes[1].e.State(); got != "waiting" {
		t.Fatalf("rank 1 state %s, want waiting (withdrawn)", got)
	}
	// Rank 0 hears rank 1's proposal for its own epoch and goes another round above it.
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 1, 0))
	if got := h.nodes[0].e.Epoch(); got != 3 {
		t.Fatalf("rank 0 epoch %d, want 3 (bumped for another round)", got)
	}
	h.run(3 * testET)
	epoch := h.checkQuorum(0, []int32{0, 1, 2})
	if epoch != 4 {
		t.Fatalf("epoch %d, want 4", epoch)
	}
	if _, ok := h.winners[2]; ok {
		t.Fatal("someone won epoch 2")
	}
}

// Rule 7: a member of a healthy quorum refuses pre-vote support and ignores a higher-epoch
// PROPOSE from a member that has none, without bumping its epoch.
func TestPreVoteHealthyQuorumRefusesAndIgnores(t *testing.T) {
	h := elect(t, 3)
	epoch := h.checkQuorum(0, []int32{0, 1, 2})
	// Rank 2 is cut off from the leader only and asks for support: rank 1 heard its leader
	// just now, rank 0 is the leader.
	h.nodes[1].e.NoteLeaderContact(h.now)
	h.nodes[2].e.CallPreVote(h.now)
	h.deliver()
	if got := h.nodes[2].e.Epoch(); got != epoch {
		t.Fatalf("rank 2 started an election without support: epoch %d", got)
	}
	if got := h.nodes[2].e.State(); got != "prevote" {
		t.Fatalf("rank 2 state %s", got)
	}
	if len(h.nodes[2].leaders) == 0 || h.nodes[2].leaders[0].Leader != 0 {
		t.Fatalf("rank 2 was not told who leads: %+v", h.nodes[2].leaders)
	}
	// Rank 2 proposes anyway (a pre-vote-less or buggy peer).
	h.nodes[2].e.StartElection(h.now, 0)
	h.deliver()
	for r := range int32(2) {
		if got := h.nodes[r].e.Epoch(); got != epoch {
			t.Fatalf("rank %d bumped to %d on an unsupported PROPOSE", r, got)
		}
		if got := h.nodes[r].e.State(); got != "stable" {
			t.Fatalf("rank %d left its quorum: %s", r, got)
		}
	}
	for _, m := range h.sent {
		if m.GetOp() == minimonv1.ElectionMessage_ACK && m.GetTo() == 2 {
			t.Fatalf("ack to the unsupported candidate: %v", m)
		}
	}
	if len(h.nodes[0].outcomes) != 1 || len(h.nodes[1].outcomes) != 1 {
		t.Fatal("the healthy quorum re-elected")
	}
}

// Rule 7: a peon supports once it has heard nothing from its leader for LT - r; support counts
// only with the current nonce.
func TestPreVoteSupportAfterLeaderSilence(t *testing.T) {
	st := newMemStore()
	e, err := New(testConfig(1, 3), st, t0)
	if err != nil {
		t.Fatal(err)
	}
	e.SetQuorum(0, 0, []int32{0, 1, 2})
	e.NoteLeaderContact(t0)
	ask := func(now time.Time, nonce uint64) *minimonv1.ElectionMessage {
		e.Step(now, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE, From: 2, To: 1, Nonce: nonce, MonmapEpoch: 1})
		rd := e.Ready()
		e.Advance(rd)
		if len(rd.Messages) != 1 || rd.Messages[0].GetOp() != minimonv1.ElectionMessage_PREVOTE_REPLY {
			t.Fatalf("want one PREVOTE_REPLY, got %v", rd.Messages)
		}
		return rd.Messages[0]
	}
	threshold := testLT - testR
	r := ask(t0.Add(threshold-time.Millisecond), 42)
	if r.GetSupport() || r.GetNonce() != 42 || r.Leader == nil || r.GetLeader() != 0 {
		t.Fatalf("before LT-r: %v", r)
	}
	if r := ask(t0.Add(threshold), 43); !r.GetSupport() || r.GetNonce() != 43 {
		t.Fatalf("at LT-r: %v", r)
	}
	// Fresh leader contact withdraws support again.
	e.NoteLeaderContact(t0.Add(threshold))
	if r := ask(t0.Add(threshold+time.Millisecond), 44); r.GetSupport() {
		t.Fatalf("after contact: %v", r)
	}
	// The leader never supports.
	l, _ := New(testConfig(0, 3), newMemStore(), t0)
	l.SetQuorum(0, 0, []int32{0, 1, 2})
	l.Step(t0.Add(time.Hour), &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE, From: 2, To: 0, Nonce: 1, MonmapEpoch: 1})
	if rd := l.Ready(); len(rd.Messages) != 1 || rd.Messages[0].GetSupport() {
		t.Fatalf("leader: %v", rd.Messages)
	}
}

func TestPreVoteNonceBinding(t *testing.T) {
	e, _ := New(testConfig(2, 3), newMemStore(), t0)
	e.CallPreVote(t0)
	rd := e.Ready()
	e.Advance(rd)
	nonce := rd.Messages[0].GetNonce()
	for _, m := range rd.Messages {
		if m.GetOp() != minimonv1.ElectionMessage_PREVOTE || m.GetNonce() != nonce {
			t.Fatalf("%v", m)
		}
	}
	reply := func(from int32, nonce uint64) {
		e.Step(t0, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE_REPLY, From: from, To: 2, Nonce: nonce, Support: true, MonmapEpoch: 1})
	}
	reply(1, nonce+1000) // stale round
	reply(0, 0)
	if e.Epoch() != 0 {
		t.Fatal("support with a wrong nonce counted")
	}
	// A new round gets a new nonce; the old one no longer counts.
	e.Tick(t0.Add(2 * testET))
	rd = e.Ready()
	e.Advance(rd)
	if len(rd.Messages) == 0 || rd.Messages[0].GetNonce() == nonce {
		t.Fatalf("second round reused the nonce: %v", rd.Messages)
	}
	reply(1, nonce)
	if e.Epoch() != 0 {
		t.Fatal("support from the previous round counted")
	}
	reply(1, rd.Messages[0].GetNonce())
	if e.Epoch() != 1 || e.State() != "candidate" {
		t.Fatalf("majority support: epoch %d state %s", e.Epoch(), e.State())
	}
	// Nonces differ across a restart too.
	e2, _ := New(testConfig(2, 3), newMemStore(), t0.Add(time.Second))
	e2.CallPreVote(t0.Add(time.Second))
	if m := e2.Ready().Messages[0]; m.GetNonce() == nonce {
		t.Fatal("restarted elector reused a nonce")
	}
}

// Rule 7 timeout: with one member silent, an admission-style election (expecting all) calls
// victory at ET with a bare majority, not before.
func TestVictoryAtETWithBareMajority(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.down[2] = true
	h.nodes[0].e.StartElection(h.now, 0)
	h.run(testET - 10*time.Millisecond)
	if len(h.nodes[0].outcomes) != 0 {
		t.Fatal("victory before ET without every expected ack")
	}
	h.run(20 * time.Millisecond)
	if len(h.nodes[0].outcomes) != 1 {
		t.Fatalf("no victory at ET: %s", h)
	}
	if at := h.nodes[0].outcomeAt[0].Sub(t0); at != testET {
		t.Fatalf("victory at %v, want %v", at, testET)
	}
	h.checkQuorum(0, []int32{0, 1})

	// Same with five members where a supporter of the pre-vote goes silent before acking.
	h = newHarness(t, 5, nil)
	h.nodes[0].e.CallPreVote(h.now)
	for r := int32(1); r < 5; r++ {
		h.deliverWhere(isOp(minimonv1.ElectionMessage_PREVOTE, 0, r))
	}
	for r := int32(1); r < 4; r++ { // rank 4's reply is lost; 1, 2, 3 support
		h.deliverWhere(isOp(minimonv1.ElectionMessage_PREVOTE_REPLY, r, 0))
	}
	if h.nodes[0].e.State() != "candidate" {
		t.Fatalf("rank 0 state %s", h.nodes[0].e.State())
	}
	h.down[3] = true
	h.down[4] = true
	h.queue = nil
	h.nodes[0].e.Tick(h.now) // nothing due
	h.flushAll()
	for r := int32(1); r < 3; r++ {
		h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, r))
		h.deliverWhere(isOp(minimonv1.ElectionMessage_ACK, r, 0))
	}
	if len(h.nodes[0].outcomes) != 0 {
		t.Fatal("victory before ET while supporter 3 has not acked")
	}
	h.run(testET)
	h.checkQuorum(0, []int32{0, 1, 2})
}

// Rule 7: victory as soon as every supporter has acked, even when not every member is up.
func TestEarlyVictoryWhenAllSupportersAcked(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.down[2] = true
	h.nodes[0].e.CallPreVote(h.now)
	h.deliver()
	if len(h.nodes[0].outcomes) != 1 || h.now != t0 {
		t.Fatalf("no immediate victory: %s", h)
	}
	h.checkQuorum(0, []int32{0, 1})
}

// Rule 6: ReleaseAt = max(own H, recv_X + rho*R_X).
func TestReleaseAtFromHorizons(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.nodes[0].e.SetHorizon(t0.Add(50 * time.Millisecond))
	h.nodes[1].e.SetHorizon(t0.Add(100 * time.Millisecond))
	h.nodes[2].e.SetHorizon(t0.Add(300 * time.Millisecond))
	h.nodes[2].e.SetHorizon(t0.Add(200 * time.Millisecond)) // H never goes back
	h.nodes[0].e.StartElection(h.now, 0)
	h.flushAll()
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 1))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 2))
	// Rank 2's ACK was sent at t0 (R = 300ms) and arrives 20ms later.
	h.now = h.now.Add(20 * time.Millisecond)
	h.deliverWhere(isOp(minimonv1.ElectionMessage_ACK, 2, 0))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_ACK, 1, 0))
	o := h.last(0)
	if o == nil || !o.Won {
		t.Fatalf("no victory: %s", h)
	}
	want := t0.Add(20*time.Millisecond + 303*time.Millisecond) // rho = 1.01
	if !o.ReleaseAt.Equal(want) {
		t.Fatalf("ReleaseAt %v, want %v", o.ReleaseAt.Sub(t0), want.Sub(t0))
	}
	for _, m := range h.sent {
		if m.GetOp() == minimonv1.ElectionMessage_ACK && m.GetFrom() == 1 && m.GetHorizonRemainingNs() != int64(100*time.Millisecond) {
			t.Fatalf("rank 1 ACK R = %d", m.GetHorizonRemainingNs())
		}
	}
	h.deliver()
	if h.last(1).ReleaseAt != (time.Time{}) {
		t.Fatal("a peon outcome carries ReleaseAt")
	}

	// The candidate's own horizon dominates when it is the latest; an expired one counts 0.
	h = newHarness(t, 3, nil)
	h.nodes[0].e.SetHorizon(t0.Add(time.Second))
	h.nodes[1].e.SetHorizon(t0.Add(-time.Second))
	h.nodes[0].e.StartElection(h.now, 0)
	h.deliver()
	if o := h.last(0); o == nil || !o.ReleaseAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("own horizon: %+v", o)
	}
	for _, m := range h.sent {
		if m.GetOp() == minimonv1.ElectionMessage_ACK && m.GetFrom() == 1 && m.GetHorizonRemainingNs() != 0 {
			t.Fatalf("expired horizon sent R = %d", m.GetHorizonRemainingNs())
		}
	}
}

// Rule 8: ACKs count only from members with the candidate's monmap epoch; a member with another
// monmap epoch NAKs instead of wasting its ack, and a newer monmap is reported.
func TestMonmapEpochMismatch(t *testing.T) {
	h := newHarness(t, 3, func(r int32) Config {
		c := testConfig(r, 3)
		if r == 2 {
			c.MonmapEpoch = 2
		}
		return c
	})
	h.nodes[0].e.StartElection(h.now, 0)
	h.deliver()
	if len(h.nodes[0].monmaps) == 0 || h.nodes[0].monmaps[0].MonmapEpoch != 2 {
		t.Fatalf("newer monmap not reported: %+v", h.nodes[0].monmaps)
	}
	h.run(testET)
	h.checkQuorum(0, []int32{0, 1})

	// An ACK carrying another monmap epoch does not count toward a majority.
	e, _ := New(testConfig(0, 3), newMemStore(), t0)
	e.StartElection(t0, 0)
	e.Advance(e.Ready())
	e.Step(t0, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_ACK, From: 1, To: 0, Epoch: 1, MonmapEpoch: 2})
	e.Tick(t0.Add(testET))
	if rd := e.Ready(); rd.Outcome != nil {
		t.Fatalf("won with a foreign-monmap ack: %+v", rd.Outcome)
	}
	if e.State() != "prevote" {
		t.Fatalf("state %s, want prevote (restarting)", e.State())
	}
}

// Outsiders: a member outside the quorum asking the leader for pre-vote support is reported;
// the leader admits it by StartElection above its epoch, and the quorum follows its leader
// although healthy.
func TestOutsiderReportedAndAdmitted(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.down[2] = true
	for r := range int32(2) {
		h.nodes[r].e.CallPreVote(h.now)
	}
	h.run(2 * testET)
	epoch := h.checkQuorum(0, []int32{0, 1})
	h.nodes[1].e.NoteLeaderContact(h.now)

	h.down[2] = false
	h.nodes[2].e.SetLastCommitted(17)
	h.nodes[2].e.CallPreVote(h.now)
	h.deliver()
	os := h.nodes[0].outsiders
	if len(os) != 1 || os[0].Rank != 2 || os[0].LastCommitted != 17 || os[0].Epoch != h.nodes[2].e.Epoch() {
		t.Fatalf("outsiders %+v", os)
	}
	if len(h.nodes[1].outsiders) != 0 {
		t.Fatal("a peon reported an outsider")
	}
	if h.nodes[2].e.Epoch() != 0 {
		t.Fatal("the outsider started an election against a healthy quorum")
	}
	h.nodes[0].e.StartElection(h.now, os[0].Epoch)
	h.deliver()
	e2 := h.checkQuorum(0, []int32{0, 1, 2})
	if e2 <= epoch || e2 <= os[0].Epoch {
		t.Fatalf("admission epoch %d, old %d, outsider %d", e2, epoch, os[0].Epoch)
	}
	if h.now != t0.Add(2*testET) {
		t.Fatal("admission waited for a timeout")
	}
	if h.nodes[1].electing == 0 {
		t.Fatal("peon not told to leave its state for the admission election")
	}
}

// A member that acked and hears no VICTORY restarts after its wait, with a new epoch.
func TestAckerRestartsWithoutVictory(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.nodes[2].e.StartElection(h.now, 0)
	h.flushAll()
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 2, 0))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 2, 1))
	h.down[2] = true // the candidate dies before it hears the acks
	h.queue = nil
	h.run(5 * testET)
	epoch := h.checkQuorum(0, []int32{0, 1})
	if epoch <= 2 {
		t.Fatalf("epoch %d", epoch)
	}
}

// Surprising input is logged and ignored.
func TestGarbageIgnored(t *testing.T) {
	e, _ := New(testConfig(1, 3), newMemStore(), t0)
	e.SetQuorum(0, 0, []int32{0, 1, 2})
	e.NoteLeaderContact(t0)
	msgs := []*minimonv1.ElectionMessage{
		nil,
		{},
		{Op: 99, From: 0, To: 1, Epoch: 3},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: 7, To: 1, Epoch: 3, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: -1, To: 1, Epoch: 3, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: 1, To: 1, Epoch: 3, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: 0, To: 2, Epoch: 3, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: 0, To: 1, Epoch: 0, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: 0, To: 1, Epoch: 4, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_PROPOSE, From: 0, To: 1, Epoch: ^uint64(0), MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_ACK, From: 0, To: 1, Epoch: 5, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_VICTORY, From: 0, To: 1, Epoch: 7, MonmapEpoch: 1},
		{Op: minimonv1.ElectionMessage_VICTORY, From: 2, To: 1, Epoch: 2, MonmapEpoch: 1, Quorum: []int32{2, 1, 1}},
		{Op: minimonv1.ElectionMessage_NAK, From: 0, To: 1, Epoch: 9, MonmapEpoch: 1, NakReason: 42},
		{Op: minimonv1.ElectionMessage_PREVOTE_REPLY, From: 0, To: 1, Nonce: 5, Support: true},
	}
	for _, m := range msgs {
		e.Step(t0, m)
	}
	if e.Epoch() != 0 || e.State() != "stable" || e.HasReady() {
		t.Fatalf("garbage changed state: epoch %d state %s ready %+v", e.Epoch(), e.State(), e.Ready())
	}
}

// A randomized network (drops, duplicates, reordering, crashes that keep the store): never two
// leaders in one epoch, epochs never go back, and once healed the cluster elects everyone.
func TestRandomNetworkSafety(t *testing.T) {
	for seed := range uint64(200) {
		runRandom(t, seed)
	}
}

func runRandom(t *testing.T, seed uint64) {
	t.Helper()
	rng := newRand(seed)
	n := 3 + int(seed%3)
	h := newHarness(t, n, func(r int32) Config {
		c := testConfig(r, n)
		c.Rand = newRand(seed*100 + uint64(r))
		return c
	})
	// One-way link cuts that come and go: asymmetric partitions are where Ceph's deferral
	// elects two leaders in one epoch (rule 9).
	cut := map[[2]int32]bool{}
	h.cut = func(m *minimonv1.ElectionMessage) bool { return cut[[2]int32{m.GetFrom(), m.GetTo()}] }
	h.autoAdmit = seed%2 == 0
	for _, nd := range h.nodes {
		nd.e.CallPreVote(h.now)
	}
	for step := 0; step < 600; step++ {
		if rng.IntN(20) == 0 {
			l := [2]int32{int32(rng.IntN(n)), int32(rng.IntN(n))}
			cut[l] = !cut[l]
		}
		h.flushAll()
		switch x := rng.IntN(100); {
		case x < 55 && len(h.queue) > 0:
			i := rng.IntN(len(h.queue))
			m := h.queue[i]
			if rng.IntN(10) != 0 { // duplicates stay queued sometimes
				h.queue = slices.Delete(h.queue, i, i+1)
			}
			if rng.IntN(8) != 0 { // drops
				h.deliverOne(m)
			}
		case x < 85:
			h.now = h.now.Add(time.Duration(rng.IntN(60)) * time.Millisecond)
			for r, nd := range h.nodes {
				if !h.down[int32(r)] {
					nd.e.Tick(h.now)
				}
			}
		case x < 88:
			r := int32(rng.IntN(n))
			h.restart(r)
			h.nodes[r].e.CallPreVote(h.now)
		case x < 92:
			r := int32(rng.IntN(n))
			h.nodes[r].e.CallPreVote(h.now)
		case x < 94:
			r := int32(rng.IntN(n))
			if l, ok := h.nodes[r].e.Leader(); ok && l == r {
				h.nodes[r].e.StartElection(h.now, 0)
			}
		default:
			r := int32(rng.IntN(n))
			if _, ok := h.nodes[r].e.Leader(); ok {
				h.nodes[r].e.NoteLeaderContact(h.now)
			}
		}
	}
	clear(cut)
	// Heal, doing what the shell does: a member in no quorum keeps asking, a leader admits
	// outsiders, and a leader that a majority does not follow steps down (paxos would time out).
	h.autoAdmit = true
	for _, nd := range h.nodes {
		if nd.e.State() != "stable" {
			nd.e.CallPreVote(h.now)
		}
	}
	for range 20 {
		h.run(testET)
		for r, nd := range h.nodes {
			if l, ok := nd.e.Leader(); !ok || l != int32(r) {
				continue
			}
			followers := 0
			for _, o := range h.nodes {
				if l, ok := o.e.Leader(); ok && l == int32(r) && o.e.Epoch() == nd.e.Epoch() {
					followers++
				}
			}
			if followers < n/2+1 {
				nd.e.CallPreVote(h.now)
			}
		}
	}
	// At least a majority ends in one quorum with one leader.
	count := map[[2]uint64]int{}
	for _, nd := range h.nodes {
		if l, ok := nd.e.Leader(); ok {
			count[[2]uint64{nd.e.Epoch(), uint64(l)}]++
		}
	}
	best := 0
	for _, c := range count {
		best = max(best, c)
	}
	if best < n/2+1 {
		t.Fatalf("seed %d: no majority quorum after healing: %v\n%s", seed, count, h)
	}
}

// Rule 9, the hole it closes: under an asymmetric partition (0 and 1 cannot hear each other,
// both reach 2), Ceph's deferral lets 2 ack 1 and then 0 in one epoch, electing both. Here 2
// acks only the first, so epoch 2 has one leader; 0 needs a later epoch.
func TestAsymmetricPartitionOneLeaderPerEpoch(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.cut = func(m *minimonv1.ElectionMessage) bool {
		return (m.GetFrom() == 0 && m.GetTo() == 1) || (m.GetFrom() == 1 && m.GetTo() == 0)
	}
	h.nodes[1].e.StartElection(h.now, 0)
	h.nodes[0].e.StartElection(h.now, 0)
	h.flushAll()
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 1, 2))
	h.run(testET) // the harness fails on two leaders in one epoch
	if o := h.last(1); o == nil || !o.Won || o.Epoch != 2 || !slices.Equal(o.Quorum, []int32{1, 2}) {
		t.Fatalf("rank 1 outcome %+v", o)
	}
	if o := h.last(0); o != nil {
		t.Fatalf("rank 0 won too: %+v", o)
	}
}

// Rule 7 liveness: a member with majority support holds back one ET when a lower rank that
// supports it is seeking election too, but never twice in a row.
func TestPreVoteDefersToLowerContenderOnce(t *testing.T) {
	e, _ := New(testConfig(1, 3), newMemStore(), t0)
	e.CallPreVote(t0)
	rd := e.Ready()
	e.Advance(rd)
	nonce := rd.Messages[0].GetNonce()
	e.Step(t0, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE_REPLY, From: 0, To: 1, Nonce: nonce, Support: true, Contending: true, MonmapEpoch: 1})
	e.Step(t0, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE_REPLY, From: 2, To: 1, Nonce: nonce, Support: true, MonmapEpoch: 1})
	if e.Epoch() != 0 || e.State() != "prevote" {
		t.Fatalf("did not hold back: epoch %d state %s", e.Epoch(), e.State())
	}
	e.Tick(t0.Add(testET - time.Millisecond))
	if e.Epoch() != 0 {
		t.Fatal("started before ET")
	}
	e.Tick(t0.Add(testET))
	if e.Epoch() != 1 || e.State() != "candidate" {
		t.Fatalf("rank 0 never proposed, yet rank 1 did not start at ET: epoch %d state %s", e.Epoch(), e.State())
	}
	// That election fails; in the next pre-vote the contender does not hold us back again.
	e.Tick(t0.Add(2 * testET))
	rd = e.Ready()
	e.Advance(rd)
	var nonce2 uint64
	for _, m := range rd.Messages {
		if m.GetOp() == minimonv1.ElectionMessage_PREVOTE {
			nonce2 = m.GetNonce()
		}
	}
	now := t0.Add(2 * testET)
	e.Step(now, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE_REPLY, From: 0, To: 1, Epoch: 1, Nonce: nonce2, Support: true, Contending: true, MonmapEpoch: 1})
	if e.Epoch() != 3 || e.State() != "candidate" {
		t.Fatalf("held back twice: epoch %d state %s", e.Epoch(), e.State())
	}
	// The contender proposes: rank 1, a candidate of a higher rank, withdraws for it.
	e.Step(now, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PROPOSE, From: 0, To: 1, Epoch: 5, MonmapEpoch: 1})
	rd = e.Ready()
	if e.Epoch() != 5 || e.State() != "waiting" || len(rd.Messages) == 0 || rd.Messages[len(rd.Messages)-1].GetOp() != minimonv1.ElectionMessage_ACK {
		t.Fatalf("did not ack the lower rank: epoch %d state %s %v", e.Epoch(), e.State(), rd.Messages)
	}
}

// A member whose ACK reaches the winner after an early victory is reported as an outsider, so
// the leader can admit it at once.
func TestLateAckReportsOutsider(t *testing.T) {
	h := newHarness(t, 3, nil)
	h.nodes[0].e.CallPreVote(h.now)
	h.flushAll()
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PREVOTE, 0, 1))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PREVOTE_REPLY, 1, 0))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 1))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_ACK, 1, 0))
	if o := h.last(0); o == nil || !slices.Equal(o.Quorum, []int32{0, 1}) {
		t.Fatalf("no early victory with the supporters: %+v", o)
	}
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 2))
	h.deliverWhere(isOp(minimonv1.ElectionMessage_ACK, 2, 0))
	if os := h.nodes[0].outsiders; len(os) != 1 || os[0].Rank != 2 || os[0].Epoch != 1 {
		t.Fatalf("late acker not reported: %+v", os)
	}
}

func TestSetQuorumEnterAndLeave(t *testing.T) {
	e, _ := New(testConfig(1, 3), newMemStore(), t0)
	e.SetQuorum(0, 0, []int32{1, 0, 2})
	if l, ok := e.Leader(); !ok || l != 0 || !slices.Equal(e.Quorum(), []int32{0, 1, 2}) || e.State() != "stable" {
		t.Fatalf("leader %d %v quorum %v state %s", l, ok, e.Quorum(), e.State())
	}
	e.SetQuorum(0, -1, nil)
	if _, ok := e.Leader(); ok || e.Quorum() != nil || e.State() != "idle" || e.HasReady() {
		t.Fatalf("after leaving: state %s ready %v", e.State(), e.HasReady())
	}
	// A quorum without us is no quorum.
	e.SetQuorum(2, 0, []int32{0, 2})
	if e.State() != "idle" {
		t.Fatalf("state %s", e.State())
	}
	// CallPreVote from a stable state tells the shell to leave leader/peon.
	e.SetQuorum(0, 1, []int32{0, 1, 2})
	e.CallPreVote(t0)
	if rd := e.Ready(); !rd.Electing || e.State() != "prevote" {
		t.Fatalf("electing %v state %s", rd.Electing, e.State())
	}
}

// A quorum member that restarts keeps the leader's epoch on disk and pre-votes in it: the leader
// still counts it in its quorum (a silent peon does not end the epoch), so it must report it for
// admission, or the member probes for as long as the epoch lasts. A PREVOTE from an older epoch
// (sent before the victory) is not a reason to admit anyone.
func TestRestartedQuorumMemberReportedForAdmission(t *testing.T) {
	h := newHarness(t, 3, nil)
	for r := range int32(3) {
		h.nodes[r].e.CallPreVote(h.now)
	}
	h.run(2 * testET)
	epoch := h.checkQuorum(0, []int32{0, 1, 2})
	h.nodes[0].outsiders = nil

	stale := &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE, From: 2, To: 0,
		Epoch: epoch - 1, Nonce: 99}
	h.nodes[0].e.Step(h.now, stale)
	h.flush(0)
	if len(h.nodes[0].outsiders) != 0 {
		t.Fatalf("a pre-victory PREVOTE was reported: %+v", h.nodes[0].outsiders)
	}

	h.nodes[1].e.NoteLeaderContact(h.now) // rank 1 hears its leader: it supports no one
	h.restart(2)
	if got := h.nodes[2].e.Epoch(); got != epoch {
		t.Fatalf("restarted member epoch %d, want the stored %d", got, epoch)
	}
	h.nodes[2].e.CallPreVote(h.now)
	h.deliver()
	os := h.nodes[0].outsiders
	if len(os) != 1 || os[0].Rank != 2 || os[0].Epoch != epoch {
		t.Fatalf("outsiders %+v, want rank 2 at epoch %d", os, epoch)
	}
	h.nodes[0].e.StartElection(h.now, os[0].Epoch)
	h.run(2 * testET)
	if e2 := h.checkQuorum(0, []int32{0, 1, 2}); e2 <= epoch {
		t.Fatalf("admission epoch %d not above %d", e2, epoch)
	}
}

// A member that acked its leader's admission election supports no one else until that election
// ends: a returning member that pre-votes (or proposes) meanwhile must not win it over and
// depose the leader (seen on real processes: the returning monitor won epoch 6 with the peon
// that had acked the leader's admission in epoch 3, 1 s without a working quorum).
func TestAdmissionAckerStaysLoyal(t *testing.T) {
	h := newHarness(t, 3, nil)
	for r := range int32(3) {
		h.nodes[r].e.CallPreVote(h.now)
	}
	h.run(2 * testET)
	epoch := h.checkQuorum(0, []int32{0, 1, 2})

	// Rank 2 leaves (it will return); the leader starts an admission election and rank 1 acks.
	h.down[2] = true
	h.nodes[1].e.NoteLeaderContact(h.now)
	h.nodes[0].e.StartElection(h.now, epoch)
	h.flushAll()
	h.deliverWhere(isOp(minimonv1.ElectionMessage_PROPOSE, 0, 1))
	if st := h.nodes[1].e.State(); st != "waiting" {
		t.Fatalf("rank 1 state %s after acking the admission, want waiting", st)
	}
	// Rank 2 returns mid-admission and asks rank 1 for support, then proposes above.
	h.down[2] = false
	h.restart(2)
	sentBefore := len(h.sent)
	h.nodes[1].e.Step(h.now, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PREVOTE, From: 2, To: 1,
		Epoch: h.nodes[2].e.Epoch(), Nonce: 7})
	h.flush(1)
	if len(h.sent) == sentBefore {
		t.Fatal("rank 1 sent no PREVOTE_REPLY")
	}
	for _, m := range h.sent[sentBefore:] {
		if m.GetOp() == minimonv1.ElectionMessage_PREVOTE_REPLY && m.GetFrom() == 1 && m.GetTo() == 2 && m.GetSupport() {
			t.Fatal("rank 1 supported a pre-vote while acking its leader's admission")
		}
	}
	before := h.nodes[1].e.Epoch()
	h.nodes[1].e.Step(h.now, &minimonv1.ElectionMessage{Op: minimonv1.ElectionMessage_PROPOSE, From: 2, To: 1,
		Epoch: before + 2, MonmapEpoch: h.nodes[1].e.cfg.MonmapEpoch})
	h.flush(1)
	if got := h.nodes[1].e.Epoch(); got != before {
		t.Fatalf("rank 1 went to epoch %d on the returning member's PROPOSE (was %d)", got, before)
	}
	// The admission completes with the old leader.
	h.run(2 * testET)
	if o := h.last(1); o == nil || o.Leader != 0 || o.Epoch <= epoch {
		t.Fatalf("rank 1 outcome %+v, want leader 0 above epoch %d", o, epoch)
	}
}
