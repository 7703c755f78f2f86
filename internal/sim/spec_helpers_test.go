package sim

import (
	"slices"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/paxos"
)

// Helpers of spec_test.go (ceph-mon-spec.md section 9 scenarios).

// leaderIdx is the node that is leader now, or -1.
func leaderIdx(w *World) int {
	for _, n := range w.nodes {
		if n.Role() == Leader {
			return n.idx
		}
	}
	return -1
}

// storedEpoch is node n's persisted election epoch.
func storedEpoch(t *testing.T, n *Node) uint64 {
	t.Helper()
	e, err := election.LoadEpoch(n.store)
	if err != nil {
		t.Fatalf("node %d: %v", n.idx, err)
	}
	return e
}

func storedLC(n *Node) uint64 { return n.storedU64(paxos.KeyLastCommitted) }
func storedFC(n *Node) uint64 { return n.storedU64(paxos.KeyFirstCommitted) }

// waitFor runs until cond holds; it fails the test on a safety violation or after within.
func waitFor(t *testing.T, w *World, within time.Duration, what string, cond func() bool) {
	t.Helper()
	ok, err := w.RunUntilCond(w.Now()+within, cond)
	if err != nil {
		t.Fatalf("safety: %v\n%s", err, tail(w))
	}
	if !ok {
		t.Fatalf("%s: not within %v (roles %v)\n%s", what, within, w.Roles(), tail(w))
	}
}

// watch runs for d, calling check after every event (check records its own failures).
func watch(t *testing.T, w *World, d time.Duration, check func()) {
	t.Helper()
	if _, err := w.RunUntilCond(w.Now()+d, func() bool { check(); return false }); err != nil {
		t.Fatalf("safety: %v\n%s", err, tail(w))
	}
}

// versionsWith lists the chosen versions whose value puts key=value.
func versionsWith(w *World, key, value string) []uint64 {
	var out []uint64
	for v, val := range w.Checker.chosen {
		if txHasPut([]byte(val), key, value) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// hasUncommitted reports whether node n durably holds an accepted value above its
// last_committed (pending_v = lc+1 and the value stored).
func hasUncommitted(n *Node) bool {
	lc := storedLC(n)
	if n.storedU64(paxos.KeyPendingV) != lc+1 {
		return false
	}
	v, _ := n.store.Get(paxos.Bucket, pxKey(lc+1))
	return v != nil
}

func pxKey(v uint64) []byte { return paxos.U64(v) }

// uncommittedValue is node n's stored value at lc+1 (nil if none).
func uncommittedValue(n *Node) []byte {
	v, _ := n.store.Get(paxos.Bucket, pxKey(storedLC(n)+1))
	return v
}

// readLog issues a scripted read of key on node i every period for d and keeps the operations
// with their issue times (a scripted read is handled at its issue time).
type readLog struct {
	at  []time.Duration
	ops []*ScriptOp
}

func readLoop(w *World, i int, key string, period, d time.Duration) *readLog {
	rl := &readLog{}
	end := w.Now() + d
	var f func()
	f = func() {
		if w.Now() >= end {
			return
		}
		if w.nodes[i].up {
			rl.at = append(rl.at, w.Now())
			rl.ops = append(rl.ops, w.Read(i, key))
		}
		w.After(period, f)
	}
	w.After(0, f)
	return rl
}

// okTimes are the issue times of the reads that were served.
func (rl *readLog) okTimes() []time.Duration {
	var out []time.Duration
	for k, op := range rl.ops {
		if op.Done && op.OK {
			out = append(out, rl.at[k])
		}
	}
	return out
}

// maxGap is the longest time in [from, to] without a served read.
func (rl *readLog) maxGap(from, to time.Duration) time.Duration {
	last, gap := from, time.Duration(0)
	for _, at := range rl.okTimes() {
		if at < from || at > to {
			continue
		}
		gap = max(gap, at-last)
		last = at
	}
	return max(gap, to-last)
}

func isPaxosOp(op minimonv1.PaxosMessage_Op) func(m *Msg) bool {
	return func(m *Msg) bool { return m.IsPaxos(op) }
}

// quorumIs reports whether node n is in a quorum of exactly want.
func quorumIs(n *Node, want []int32) bool { return slices.Equal(n.quorum(), want) }

// specNet is the network of the spec tests: the scenario's fault hooks first (the first
// non-zero verdict wins), then FIFO delivery per link, as the real transport gives (one gRPC
// stream per sender->receiver pair, internal/monitor): each message gets just enough extra delay
// to arrive after the previous one on its link could have. Scenarios about reordering say so.
type specNet struct {
	w     *World
	hooks []Hook
	fifo  bool
	ub    map[[2]int32]time.Duration // latest possible arrival of a link's last message
}

func newSpecNet(w *World, fifo bool) *specNet {
	sn := &specNet{w: w, fifo: fifo, ub: map[[2]int32]time.Duration{}}
	w.AddHook(sn.hook)
	return sn
}

// add installs a fault hook; it returns a function that removes it.
func (sn *specNet) add(h Hook) (remove func()) {
	sn.hooks = append(sn.hooks, h)
	i := len(sn.hooks) - 1
	return func() { sn.hooks[i] = nil }
}

func (sn *specNet) hook(m *Msg) Verdict {
	for _, h := range sn.hooks {
		if h == nil {
			continue
		}
		if v := h(m); !v.isZero() {
			return v
		}
	}
	if !sn.fifo {
		return Verdict{}
	}
	w, c := sn.w, sn.w.Config()
	k := [2]int32{m.From, m.To}
	d := max(0, sn.ub[k]-w.Now()-c.MinLatency)
	sn.ub[k] = w.Now() + d + c.MaxLatency
	return Verdict{Delay: d}
}

// specWorld builds a world with a specNet (FIFO links).
func specWorld(t *testing.T, cfg Config) (*World, *specNet) {
	t.Helper()
	w := newTestWorld(t, cfg)
	return w, newSpecNet(w, true)
}

// steer lets only node want gather pre-vote support (the others' PREVOTEs are dropped), so it is
// the one that starts the next election. Used where a scenario needs a given leader; minimon has
// no lowest-rank-wins rule (design.md 4a rules 7 and 9: whoever gathers support first).
func steer(want int) Hook {
	return func(m *Msg) Verdict {
		if m.Election != nil && m.Election.GetOp() == minimonv1.ElectionMessage_PREVOTE && int(m.From) != want {
			return Verdict{Drop: true}
		}
		return Verdict{}
	}
}
