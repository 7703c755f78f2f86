package election

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// memStore is a tiny in-memory Store (kvstore.Mem's twin, so this package tests alone).
type memStore struct{ kv map[string][]byte }

func newMemStore() *memStore { return &memStore{kv: map[string][]byte{}} }

func (s *memStore) Get(bucket string, key []byte) ([]byte, error) {
	v, ok := s.kv[bucket+"\x00"+string(key)]
	if !ok {
		return nil, nil
	}
	return bytes.Clone(v), nil
}

func (s *memStore) apply(tx *minimonv1.Transaction) {
	for _, op := range tx.GetOps() {
		if op.GetKind() == minimonv1.StoreOp_PUT {
			s.kv[op.GetBucket()+"\x00"+string(op.GetKey())] = bytes.Clone(op.GetValue())
		}
	}
}

func (s *memStore) epoch(t testing.TB) uint64 {
	t.Helper()
	v, err := LoadEpoch(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const (
	testET = 300 * time.Millisecond
	testLT = 600 * time.Millisecond
	testR  = 100 * time.Millisecond
)

var t0 = time.Unix(1000, 0)

func testConfig(rank int32, n int) Config {
	members := make([]int32, n)
	for i := range members {
		members[i] = int32(i)
	}
	return Config{
		Rank: rank, Members: members,
		ElectionTimeout: testET, LeaseAckTimeout: testLT, RenewInterval: testR,
		ClockRateError: 0.01, MonmapEpoch: 1,
	}
}

type node struct {
	e         *Elector
	st        *memStore
	outcomes  []*Outcome
	outcomeAt []time.Time
	outsiders []Outsider
	leaders   []*LeaderHint
	monmaps   []*MonmapHint
	electing  int
	lastEpoch uint64 // last persisted
}

// harness runs N electors over a virtual network: messages queue FIFO and are delivered at the
// current virtual time unless cut.
type harness struct {
	t       testing.TB
	now     time.Time
	nodes   []*node
	queue   []*minimonv1.ElectionMessage
	down    map[int32]bool
	cut     func(m *minimonv1.ElectionMessage) bool
	winners map[uint64]int32 // epoch -> leader, to check one leader per epoch
	sent    []*minimonv1.ElectionMessage
	// autoAdmit makes a leader admit every outsider at once, as a shell would.
	autoAdmit bool
}

func newHarness(t testing.TB, n int, cfg func(r int32) Config) *harness {
	t.Helper()
	h := &harness{t: t, now: t0, down: map[int32]bool{}, winners: map[uint64]int32{}}
	for r := range int32(n) {
		c := testConfig(r, n)
		if cfg != nil {
			c = cfg(r)
		}
		st := newMemStore()
		e, err := New(c, st, h.now)
		if err != nil {
			t.Fatal(err)
		}
		h.nodes = append(h.nodes, &node{e: e, st: st})
	}
	return h
}

// restart rebuilds node r from its store (a crash that keeps the store).
func (h *harness) restart(r int32) {
	h.t.Helper()
	n := h.nodes[r]
	e, err := New(n.e.cfg, n.st, h.now)
	if err != nil {
		h.t.Fatal(err)
	}
	n.e = e
	h.flush(r)
}

func (h *harness) flush(r int32) {
	h.t.Helper()
	n := h.nodes[r]
	for n.e.HasReady() {
		rd := n.e.Ready()
		if rd.IsEmpty() {
			h.t.Fatalf("rank %d: HasReady but Ready is empty", r)
		}
		if rd.Persist != nil {
			ep, ok := PersistedEpoch(rd.Persist)
			if !ok {
				h.t.Fatalf("rank %d: Persist without an epoch: %v", r, rd.Persist)
			}
			if ep < n.lastEpoch {
				h.t.Fatalf("rank %d: persisted epoch went back %d -> %d", r, n.lastEpoch, ep)
			}
			n.lastEpoch = ep
			n.st.apply(rd.Persist)
		}
		if rd.Electing {
			n.electing++
		}
		for _, m := range rd.Messages {
			if m.GetFrom() != r {
				h.t.Fatalf("rank %d sends as %d", r, m.GetFrom())
			}
			// Rule: the epoch a message names is durable before it leaves.
			if m.GetOp() != minimonv1.ElectionMessage_PREVOTE_REPLY && m.GetOp() != minimonv1.ElectionMessage_PREVOTE &&
				m.GetOp() != minimonv1.ElectionMessage_NAK && m.GetEpoch() > n.st.epoch(h.t) {
				h.t.Fatalf("rank %d sends %v epoch %d before persisting it (stored %d)", r, m.GetOp(), m.GetEpoch(), n.st.epoch(h.t))
			}
			h.sent = append(h.sent, m)
			h.queue = append(h.queue, m)
		}
		if o := rd.Outcome; o != nil {
			if o.Epoch%2 != 0 || o.Epoch != n.st.epoch(h.t) {
				h.t.Fatalf("rank %d: outcome epoch %d, stored %d", r, o.Epoch, n.st.epoch(h.t))
			}
			if w, ok := h.winners[o.Epoch]; ok && w != o.Leader {
				h.t.Fatalf("two leaders in epoch %d: %d and %d", o.Epoch, w, o.Leader)
			}
			h.winners[o.Epoch] = o.Leader
			if o.Won != (o.Leader == r) {
				h.t.Fatalf("rank %d: outcome %+v", r, o)
			}
			n.outcomes = append(n.outcomes, o)
			n.outcomeAt = append(n.outcomeAt, h.now)
		}
		n.outsiders = append(n.outsiders, rd.Outsiders...)
		admit := uint64(0)
		for _, o := range rd.Outsiders {
			admit = max(admit, o.Epoch+1)
		}
		if rd.Leader != nil {
			n.leaders = append(n.leaders, rd.Leader)
		}
		if rd.NewerMonmap != nil {
			n.monmaps = append(n.monmaps, rd.NewerMonmap)
		}
		n.e.Advance(rd)
		if h.autoAdmit && admit > 0 {
			n.e.StartElection(h.now, admit-1)
		}
	}
}

func (h *harness) flushAll() {
	for r := range h.nodes {
		if !h.down[int32(r)] {
			h.flush(int32(r))
		}
	}
}

// deliver hands over every queued message (and what they cause) at the current time.
func (h *harness) deliver() {
	h.t.Helper()
	for i := 0; ; i++ {
		if i > 100000 {
			h.t.Fatal("message storm")
		}
		h.flushAll()
		if len(h.queue) == 0 {
			return
		}
		m := h.queue[0]
		h.queue = h.queue[1:]
		h.deliverOne(m)
	}
}

// deliverWhere hands over the first queued message matching pred; false if none.
func (h *harness) deliverWhere(pred func(m *minimonv1.ElectionMessage) bool) bool {
	h.t.Helper()
	h.flushAll()
	for i, m := range h.queue {
		if pred(m) {
			h.queue = slices.Delete(h.queue, i, i+1)
			h.deliverOne(m)
			h.flushAll()
			return true
		}
	}
	return false
}

func (h *harness) deliverOne(m *minimonv1.ElectionMessage) {
	to := m.GetTo()
	if to < 0 || int(to) >= len(h.nodes) || h.down[to] || h.down[m.GetFrom()] || (h.cut != nil && h.cut(m)) {
		return
	}
	h.nodes[to].e.Step(h.now, m)
	h.flush(to)
}

// run advances virtual time by d in steps of 10ms, ticking and delivering.
func (h *harness) run(d time.Duration) {
	h.t.Helper()
	end := h.now.Add(d)
	for {
		h.deliver()
		if !h.now.Before(end) {
			return
		}
		h.now = h.now.Add(10 * time.Millisecond)
		for r, n := range h.nodes {
			if !h.down[int32(r)] {
				n.e.Tick(h.now)
			}
		}
	}
}

func (h *harness) last(r int32) *Outcome {
	n := h.nodes[r]
	if len(n.outcomes) == 0 {
		return nil
	}
	return n.outcomes[len(n.outcomes)-1]
}

// checkQuorum asserts every rank in want ended with leader and quorum want.
func (h *harness) checkQuorum(leader int32, want []int32) uint64 {
	h.t.Helper()
	var epoch uint64
	for _, r := range want {
		o := h.last(r)
		if o == nil {
			h.t.Fatalf("rank %d: no outcome", r)
		}
		if o.Leader != leader || !slices.Equal(o.Quorum, want) {
			h.t.Fatalf("rank %d: outcome leader %d quorum %v, want %d %v", r, o.Leader, o.Quorum, leader, want)
		}
		if epoch != 0 && o.Epoch != epoch {
			h.t.Fatalf("rank %d: epoch %d, others %d", r, o.Epoch, epoch)
		}
		epoch = o.Epoch
		if st := h.nodes[r].e.State(); st != "stable" {
			h.t.Fatalf("rank %d: state %s", r, st)
		}
	}
	return epoch
}

func (h *harness) String() string {
	s := ""
	for r, n := range h.nodes {
		s += fmt.Sprintf("rank %d: epoch %d state %s\n", r, n.e.Epoch(), n.e.State())
	}
	return s
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
