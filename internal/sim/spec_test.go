package sim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/paxos"
)

// The scenarios of ceph-mon-spec.md section 9 that live at the level of paxos + election, one
// test each, named TestSpec9_<nn>_<what> after the spec's numbering. Each injects exactly the
// fault its scenario names and asserts what the scenario says, as design.md section 4 adapts it
// where minimon differs from Ceph (a lagging or slow peon is caught up and fenced by its lease,
// not re-elected; pre-vote; leases without clock sync). Every test ends with the simulator's
// safety checkers (agreement, durability, one leader per epoch, store scans, acknowledged writes)
// and porcupine over the whole client history.

var all3 = []int32{0, 1, 2}

// 1. Cold start of 3 mons: one leader, quorum {0,1,2}, election epoch even on all, first write
// within 1 s (design.md 4, difference 5). minimon adapts two points: there is no lowest-rank-wins
// rule (design.md 4a rules 7 and 9: the first member to gather pre-vote support leads, any rank),
// and there is no monmap service at this level (the members run with monmap epoch 1).
func TestSpec9_01_ColdStart(t *testing.T) {
	ranks := map[int]int{}
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := cfg3(100 + seed)
			c.NoClients = true
			w, _ := specWorld(t, c)
			coldStart(t, w, ranks)
		})
	}
	t.Logf("leader ranks over the seeds: %v", ranks)
}

func coldStart(t *testing.T, w *World, ranks map[int]int) {
	t.Helper()
	l := stable(t, w, 2*time.Second)
	formed := w.Now()
	ranks[l]++
	e := w.nodes[l].epoch()
	for _, n := range w.nodes {
		if n.epoch() != e || n.epoch()%2 != 0 || n.leader() != int32(l) {
			t.Fatalf("node %d in epoch %d under %d; leader %d in %d (want one even epoch)", n.idx, n.epoch(), n.leader(), l, e)
		}
		if se := storedEpoch(t, n); se != e || n.el().Epoch() != e {
			t.Fatalf("node %d: elector epoch %d, stored %d, want %d", n.idx, n.el().Epoch(), se, e)
		}
		if !quorumIs(n, all3) {
			t.Fatalf("node %d quorum %v, want %v", n.idx, n.quorum(), all3)
		}
	}
	if len(w.Checker.leaders) == 0 {
		t.Fatal("checker saw no leader")
	}
	v := writeOK(t, w, "k0", "first", 2*time.Second)
	if w.Now() > time.Second {
		t.Fatalf("first write acknowledged at %v (quorum at %v), want < 1s", w.Now(), formed)
	}
	t.Logf("leader %d, quorum at %v, first write v%d acknowledged at %v", l, formed, v, w.Now())
	finish(t, w)
}

// Cold start on links that reorder (the simulator's default network, stronger than the real
// transport). Seed 102 once showed a COLLECT overtaking the VICTORY and being dropped, costing a
// collect timeout and a second election; the leader now repeats COLLECT every renew interval.
func TestSpec9_01_ColdStartReordered(t *testing.T) {
	for seed := uint64(101); seed <= 112; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := cfg3(seed)
			c.NoClients = true
			w, _ := specWorld(t, c)
			w.ClearHooks() // no FIFO
			coldStart(t, w, map[int]int{})
		})
	}
}

// 3. Kill the leader: the remaining two elect the lower rank within election timeout + lease
// timeout (design: LT + pre-vote + election, about 0.6 s), and writes resume.
func TestSpec9_03_KillLeader(t *testing.T) {
	w, _ := specWorld(t, cfg3(203))
	l := stable(t, w, 2*time.Second)
	writeOK(t, w, "k0", "before", time.Second)
	old := w.nodes[l].epoch()
	killed := w.Now()
	w.Crash(l)
	c := w.Config()
	bound := c.LeaseAckTimeout + c.ProbeInterval + 2*c.ElectionTimeout
	nl := stable(t, w, 3*time.Second)
	took := w.Now() - killed
	// No lowest-rank rule in minimon (design.md 4a rules 7, 9): any survivor may lead.
	if nl == l || nl < 0 {
		t.Fatalf("new leader %d after killing %d", nl, l)
	}
	if took > bound {
		t.Fatalf("failover took %v, want <= LT + probe + 2 ET = %v", took, bound)
	}
	if e := w.nodes[nl].epoch(); e <= old || e%2 != 0 {
		t.Fatalf("new epoch %d after %d", e, old)
	}
	writeOK(t, w, "k0", "after", time.Second)
	t.Logf("leader %d killed; %d leads epoch %d after %v", l, nl, w.nodes[nl].epoch(), took)
	w.Restart(l)
	stable(t, w, 3*time.Second)
	t.Logf("after the restart of %d the leader is %d (design 4: the leader admits it)", l, leaderIdx(w))
	finish(t, w)
}

// 4. A mon that crashed with an odd persisted epoch (mid-election) bumps to even on start, and
// persists that before anything else.
func TestSpec9_04_OddEpochRestart(t *testing.T) {
	c := cfg3(204)
	c.NoClients = true
	w, _ := specWorld(t, c)
	l := stable(t, w, 2*time.Second)
	victim := 2
	if l == 2 {
		victim = 1
	}
	w.Crash(l) // the survivors elect
	waitFor(t, w, 3*time.Second, "survivor persists an odd epoch", func() bool {
		return storedEpoch(t, w.nodes[victim])%2 == 1
	})
	w.Crash(victim)
	odd := storedEpoch(t, w.nodes[victim])
	if odd%2 != 1 {
		t.Fatalf("stored epoch %d after the crash, want odd", odd)
	}
	var first []uint64
	w.PersistHook = func(n *Node, tx *minimonv1.Transaction) time.Duration {
		if e, ok := election.PersistedEpoch(tx); ok && n.idx == victim {
			first = append(first, e)
		}
		return 0
	}
	w.Restart(victim)
	if e := w.nodes[victim].el().Epoch(); e != odd+1 {
		t.Fatalf("restarted with stored epoch %d: elector epoch %d, want %d", odd, e, odd+1)
	}
	run(t, w, 50*time.Millisecond)
	if len(first) == 0 || first[0] != odd+1 {
		t.Fatalf("first epoch persisted after the restart: %v, want %d", first, odd+1)
	}
	w.PersistHook = nil
	w.Restart(l)
	stable(t, w, 3*time.Second)
	writeOK(t, w, "k0", "after", time.Second)
	finish(t, w)
}

// 6. Simultaneous elections from every rank: exactly one leader per epoch, never two leaders in
// one even epoch. Every member is cut off until its leader is gone and its pre-votes are held;
// the heal releases every pre-vote at once, so every member gains support and proposes together.
func TestSpec9_06_SimultaneousElections(t *testing.T) {
	for _, tc := range []struct {
		seed uint64
		n    int
	}{{601, 3}, {602, 3}, {603, 5}, {604, 5}} {
		t.Run(fmt.Sprintf("n%d-seed%d", tc.n, tc.seed), func(t *testing.T) {
			c := DefaultConfig(tc.seed, tc.n)
			c.Trace = true
			w, sn := specWorld(t, c)
			stable(t, w, 3*time.Second)
			maxCandidates := 0
			for round := 0; round < 3; round++ {
				var groups [][]int
				for i := 0; i < tc.n; i++ {
					groups = append(groups, []int{i})
				}
				w.Partition(groups...)
				holding := true
				remove := sn.add(func(m *Msg) Verdict {
					if holding && m.Election != nil && m.Election.GetOp() == minimonv1.ElectionMessage_PREVOTE {
						return Verdict{Hold: true}
					}
					return Verdict{}
				})
				run(t, w, 1500*time.Millisecond)
				for _, n := range w.nodes {
					if r := n.Role(); r == Leader || r == Peon {
						t.Fatalf("round %d: node %d still %v while cut off", round, n.idx, r)
					}
				}
				proposers := map[int32]bool{}
				rmP := sn.add(func(m *Msg) Verdict {
					if m.Election != nil && m.Election.GetOp() == minimonv1.ElectionMessage_PROPOSE {
						proposers[m.From] = true
					}
					return Verdict{}
				})
				w.Heal()
				holding = false
				w.Release(nil)
				remove()
				stable(t, w, 3*time.Second)
				rmP()
				maxCandidates = max(maxCandidates, len(proposers))
				// Every member in the new quorum agrees on one leader and one even epoch.
				l := leaderIdx(w)
				for _, n := range w.nodes {
					if n.epoch() != w.nodes[l].epoch() || n.leader() != int32(l) || n.epoch()%2 != 0 {
						t.Fatalf("round %d: node %d epoch %d leader %d; leader %d epoch %d", round, n.idx, n.epoch(), n.leader(), l, w.nodes[l].epoch())
					}
				}
			}
			if maxCandidates < 2 {
				t.Fatalf("never more than %d candidate proposing at once: the scenario did not happen", maxCandidates)
			}
			t.Logf("up to %d candidates proposed at once; leaders per epoch %v", maxCandidates, w.Checker.leaders)
			writeOK(t, w, "k0", "end", time.Second)
			finish(t, w)
		})
	}
}

// 11. A peon behind by <= paxos_max_join_drift versions joins the election directly and is caught
// up by the COMMIT catch-up (share_state) during collect, without a full sync. The peon misses
// five rounds (its BEGINs and COMMITs are lost, its leases still arrive so it stays a peon and
// is fenced by its lease), then the leader dies and the survivors elect a leader that is not it.
func TestSpec9_11_PeonBehindWithinDrift(t *testing.T) {
	c := cfg3(211)
	c.NoClients = true
	w, sn := specWorld(t, c)
	l := stable(t, w, 2*time.Second)
	p := peonOf(w, l)
	q := 3 - l - p
	behindAt := storedLC(w.nodes[p])
	rm := sn.add(func(m *Msg) Verdict {
		if int(m.To) == p && (m.IsPaxos(minimonv1.PaxosMessage_BEGIN) || m.IsPaxos(minimonv1.PaxosMessage_COMMIT)) {
			return Verdict{Drop: true}
		}
		return Verdict{}
	})
	var last uint64
	for k := 0; k < 5; k++ { // 5 <= MaxJoinDrift (10)
		last = writeOK(t, w, "k0", fmt.Sprint("v", k), 2*time.Second)
	}
	if got := storedLC(w.nodes[p]); got != behindAt || last-got > 10 {
		t.Fatalf("setup: peon lc %d, leader %d; want behind by 1..10", got, last)
	}
	catchUp := 0
	sn.add(func(m *Msg) Verdict {
		if int(m.To) == p && int(m.From) == q && m.IsPaxos(minimonv1.PaxosMessage_COMMIT) && len(m.Paxos.GetValues()) > 1 {
			catchUp++
		}
		return Verdict{}
	})
	rm()
	w.Crash(l)
	rmS := sn.add(steer(q))
	if nl := stable(t, w, 3*time.Second); nl != q {
		t.Fatalf("leader %d, want %d", nl, q)
	}
	rmS()
	waitFor(t, w, time.Second, "peon caught up", func() bool { return storedLC(w.nodes[p]) >= last })
	if catchUp == 0 {
		t.Fatal("peon caught up without a multi-version COMMIT from the new leader (share_state)")
	}
	if s := w.nodes[p].Syncs(); s != 0 {
		t.Fatalf("peon made %d full syncs; within the drift it must not", s)
	}
	r := w.Read(p, "k0")
	waitFor(t, w, time.Second, "read on the peon", func() bool {
		if r.Done && !r.OK {
			r = w.Read(p, "k0")
		}
		return r.Done && r.OK
	})
	if r.Out.Value != "v4" {
		t.Fatalf("peon reads %q, want v4", r.Out.Value)
	}
	w.Restart(l)
	stable(t, w, 3*time.Second)
	finish(t, w)
}

// 11 (variant): the peon falls behind while cut off, leaves the quorum by its lease timeout, and
// returns: the leader admits it (design 4) and catches it up during the collect.
func TestSpec9_11_PeonBehindAfterPartition(t *testing.T) {
	c := cfg3(211)
	c.NoClients = true
	w, _ := specWorld(t, c)
	l := stable(t, w, 2*time.Second)
	p := peonOf(w, l)
	w.Isolate(p)
	run(t, w, time.Second)
	var last uint64
	for k := 0; k < 5; k++ {
		last = writeOK(t, w, "k0", fmt.Sprint("v", k), time.Second)
	}
	w.Heal()
	stable(t, w, 3*time.Second)
	waitFor(t, w, time.Second, "peon caught up", func() bool { return storedLC(w.nodes[p]) >= last })
	if s := w.nodes[p].Syncs(); s != 0 {
		t.Fatalf("peon made %d full syncs", s)
	}
	finish(t, w)
}

// 14. A peon ahead of the new leader: the leader learns the missing committed values from LAST
// and shares them with the other lagging member; nothing is lost. Five members: {0,2,3} commit
// while {1,4} are cut off; 0 and 3 then die, so 1 (behind) leads {1,2,4} and 2 is ahead.
func TestSpec9_14_PeonAheadOfNewLeader(t *testing.T) {
	c := DefaultConfig(214, 5)
	c.Trace, c.NoClients = true, true
	w, sn := specWorld(t, c)
	rm := sn.add(steer(0))
	if l := stable(t, w, 3*time.Second); l != 0 {
		t.Fatalf("leader %d, want 0", l)
	}
	rm()
	w.Partition([]int{0, 2, 3}, []int{1, 4})
	run(t, w, time.Second)
	behind := w.nodes[1].px().LastCommitted()
	var last uint64
	for k := 0; k < 4; k++ {
		last = writeOK(t, w, "k0", fmt.Sprint("ahead", k), time.Second)
	}
	run(t, w, 100*time.Millisecond)
	if storedLC(w.nodes[2]) < last || storedLC(w.nodes[1]) > behind || storedLC(w.nodes[4]) > behind {
		t.Fatalf("setup: lc of 1,2,4 = %d,%d,%d; want 2 at %d, 1 and 4 at %d",
			storedLC(w.nodes[1]), storedLC(w.nodes[2]), storedLC(w.nodes[4]), last, behind)
	}
	w.Crash(0)
	w.Crash(3)
	w.Heal()
	rm = sn.add(steer(1))
	l := stable(t, w, 3*time.Second)
	rm()
	if l != 1 {
		t.Fatalf("leader %d: the scenario needs the lagging rank 1 to lead", l)
	}
	for _, i := range []int{1, 2, 4} {
		waitFor(t, w, time.Second, "durable catch-up", func() bool { return storedLC(w.nodes[i]) >= last })
		if got := storedLC(w.nodes[i]); got < last {
			t.Fatalf("node %d lc %d after recovery, want >= %d: committed values lost", i, got, last)
		}
		if s := w.nodes[i].Syncs(); s != 0 {
			t.Fatalf("node %d made %d full syncs", i, s)
		}
	}
	v := writeOK(t, w, "k0", "new-leader", time.Second)
	if v <= last {
		t.Fatalf("new value at v%d overwrote v%d", v, last)
	}
	w.Restart(0)
	w.Restart(3)
	stable(t, w, 3*time.Second)
	finish(t, w)
}

// dropAcceptsTo returns a hook that drops every ACCEPT to node l (the leader cannot reach its
// commit condition) and, if beginTo is non-nil, every BEGIN from l to the ranks it lists.
func dropRound(l int, beginTo ...int) Hook {
	return func(m *Msg) Verdict {
		if int(m.To) == l && m.IsPaxos(minimonv1.PaxosMessage_ACCEPT) {
			return Verdict{Drop: true}
		}
		if int(m.From) == l && m.IsPaxos(minimonv1.PaxosMessage_BEGIN) && slices.Contains(beginTo, int(m.To)) {
			return Verdict{Drop: true}
		}
		return Verdict{}
	}
}

// 15. The leader dies after BEGIN reached every peon but before commit: the next leader finds
// the value at lc+1 with its pending_pn and re-proposes it; it commits exactly once.
func TestSpec9_15_LeaderDiesAfterBeginAll(t *testing.T) {
	c := cfg3(215)
	c.NoClients = true
	w, sn := specWorld(t, c)
	l := stable(t, w, 2*time.Second)
	writeOK(t, w, "k0", "old", time.Second)
	run(t, w, 100*time.Millisecond)
	rm := sn.add(dropRound(l))
	op := w.Write(l, "k0", "x")
	waitFor(t, w, 900*time.Millisecond, "every peon durably accepted", func() bool {
		for _, n := range w.nodes {
			if n.idx != l && !hasUncommitted(n) {
				return false
			}
		}
		return true
	})
	w.Crash(l)
	rm()
	nl := stable(t, w, 3*time.Second)
	waitFor(t, w, time.Second, "recovered value committed", func() bool { return len(versionsWith(w, "k0", "x")) > 0 })
	run(t, w, 200*time.Millisecond)
	got := versionsWith(w, "k0", "x")
	if len(got) != 1 {
		t.Fatalf("value committed at versions %v, want exactly once", got)
	}
	if op.OK {
		t.Fatalf("write acknowledged without a commit: %+v", op)
	}
	r := w.Read(nl, "k0")
	waitFor(t, w, time.Second, "read", func() bool { return r.Done })
	if r.OK && r.Out.Value != "x" {
		t.Fatalf("new leader reads %q, want the recovered x", r.Out.Value)
	}
	w.Restart(l)
	stable(t, w, 3*time.Second)
	if got := versionsWith(w, "k0", "x"); len(got) != 1 {
		t.Fatalf("after the old leader returned: versions %v", got)
	}
	finish(t, w)
}

// 16. The leader dies after BEGIN reached only some peons: recovery commits that value or a
// different one, never two values at one version, the value at most once.
func TestSpec9_16_LeaderDiesAfterBeginSome(t *testing.T) {
	// (a) BEGIN reached one peon: it is in the new quorum, so the value is recovered, once.
	t.Run("one-peon", func(t *testing.T) {
		c := cfg3(216)
		c.NoClients = true
		w, sn := specWorld(t, c)
		l := stable(t, w, 2*time.Second)
		writeOK(t, w, "k0", "old", time.Second)
		run(t, w, 100*time.Millisecond)
		a := peonOf(w, l)
		b := 3 - l - a
		rm := sn.add(dropRound(l, b))
		w.Write(l, "k0", "x")
		waitFor(t, w, 900*time.Millisecond, "one peon durably accepted", func() bool { return hasUncommitted(w.nodes[a]) })
		if hasUncommitted(w.nodes[b]) {
			t.Fatal("setup: the other peon accepted too")
		}
		w.Crash(l)
		rm()
		stable(t, w, 3*time.Second)
		waitFor(t, w, time.Second, "recovered value committed", func() bool { return len(versionsWith(w, "k0", "x")) > 0 })
		run(t, w, 200*time.Millisecond)
		if got := versionsWith(w, "k0", "x"); len(got) != 1 {
			t.Fatalf("value committed at %v, want once (the new quorum holds it)", got)
		}
		w.Restart(l)
		stable(t, w, 3*time.Second)
		finish(t, w)
	})
	// (b) BEGIN reached no peon: only the dead leader holds it. The survivors commit another
	// value at that version; the returning leader drops its copy.
	t.Run("no-peon", func(t *testing.T) {
		c := cfg3(217)
		c.NoClients = true
		w, sn := specWorld(t, c)
		l := stable(t, w, 2*time.Second)
		writeOK(t, w, "k0", "old", time.Second)
		run(t, w, 100*time.Millisecond)
		rm := sn.add(dropRound(l, 0, 1, 2))
		w.Write(l, "k0", "x")
		waitFor(t, w, 900*time.Millisecond, "leader durably accepted", func() bool { return hasUncommitted(w.nodes[l]) })
		v := storedLC(w.nodes[l]) + 1
		w.Crash(l)
		rm()
		stable(t, w, 3*time.Second)
		if got := writeOK(t, w, "k0", "y", time.Second); got != v {
			t.Fatalf("y committed at v%d, want v%d (the slot x was begun in)", got, v)
		}
		w.Restart(l)
		stable(t, w, 3*time.Second)
		run(t, w, 200*time.Millisecond)
		if got := versionsWith(w, "k0", "x"); len(got) != 0 {
			t.Fatalf("x committed at %v; nobody alive had it", got)
		}
		if storedLC(w.nodes[l]) < v {
			t.Fatalf("returning leader lc %d, want >= %d", storedLC(w.nodes[l]), v)
		}
		finish(t, w)
	})
}

// 17. Two uncommitted values for one version from different old leaders (different pns): the
// higher pending_pn wins. Five members: leader 0 gets x accepted on {0,1} (pn p1), dies with 1;
// leader 2 of {2,3,4} gets y accepted on {2,3} (pn p2 > p1), dies with 3; then {0,3,4} recover
// and see x@p1 and y@p2 at the same version.
func TestSpec9_17_HigherPendingPNWins(t *testing.T) {
	c := DefaultConfig(218, 5)
	c.Trace, c.NoClients = true, true
	w, sn := specWorld(t, c)
	rmS := sn.add(steer(0))
	if l := stable(t, w, 3*time.Second); l != 0 {
		t.Fatalf("leader %d, want 0", l)
	}
	rmS()
	writeOK(t, w, "k0", "old", time.Second)
	run(t, w, 100*time.Millisecond)
	v := storedLC(w.nodes[0]) + 1

	rm := sn.add(dropRound(0, 2, 3, 4))
	w.Write(0, "k0", "x")
	waitFor(t, w, 900*time.Millisecond, "x accepted on 0 and 1", func() bool {
		return hasUncommitted(w.nodes[0]) && hasUncommitted(w.nodes[1])
	})
	p1 := w.nodes[1].storedU64(paxos.KeyPendingPN)
	w.Crash(0)
	w.Crash(1)
	rm()

	rmS = sn.add(steer(2))
	if l := stable(t, w, 3*time.Second); l != 2 {
		t.Fatalf("leader %d of {2,3,4}, want 2", l)
	}
	rmS()
	if storedLC(w.nodes[2])+1 != v {
		t.Fatalf("setup: leader 2 lc %d, want %d", storedLC(w.nodes[2]), v-1)
	}
	rm = sn.add(dropRound(2, 4))
	w.Write(2, "k0", "y")
	waitFor(t, w, 900*time.Millisecond, "y accepted on 2 and 3", func() bool {
		return hasUncommitted(w.nodes[2]) && hasUncommitted(w.nodes[3])
	})
	p2 := w.nodes[3].storedU64(paxos.KeyPendingPN)
	if p2 <= p1 {
		t.Fatalf("setup: y's pn %d not above x's %d", p2, p1)
	}
	w.Crash(2)
	w.Crash(3)
	rm()

	w.Restart(0)
	w.Restart(3)
	stable(t, w, 3*time.Second)
	waitFor(t, w, time.Second, "version recovered", func() bool { _, ok := w.Checker.Chosen(v); return ok })
	val, ok := w.Checker.Chosen(v)
	if !ok || !txHasPut(val, "k0", "y") {
		t.Fatalf("version %d: chosen %v, want y (pn %d beats x's %d)", v, ok, p2, p1)
	}
	if got := versionsWith(w, "k0", "x"); len(got) != 0 {
		t.Fatalf("x (lower pn) committed at %v", got)
	}
	w.Restart(1)
	w.Restart(2)
	stable(t, w, 3*time.Second)
	finish(t, w)
}

// 18. The leader crashes between its durable commit and sending COMMIT: the value is visible
// after recovery, re-proposed from the peons' uncommitted copies if the leader stays down, or
// shared from the leader's store if it comes back into a quorum with a peon that lacks it.
func TestSpec9_18_LeaderCrashAfterDurableCommit(t *testing.T) {
	for _, variant := range []string{"peons-recover", "leader-store"} {
		t.Run(variant, func(t *testing.T) {
			c := cfg3(219)
			c.NoClients = true
			w, sn := specWorld(t, c)
			l := stable(t, w, 2*time.Second)
			writeOK(t, w, "k0", "old", time.Second)
			run(t, w, 100*time.Millisecond)
			rm := sn.add(func(m *Msg) Verdict {
				if int(m.From) == l && m.IsPaxos(minimonv1.PaxosMessage_COMMIT) {
					return Verdict{Drop: true} // the crash comes before COMMIT goes out
				}
				return Verdict{}
			})
			v := storedLC(w.nodes[l]) + 1
			op := w.Write(l, "k0", "new")
			waitFor(t, w, time.Second, "leader's commit durable", func() bool { return storedLC(w.nodes[l]) >= v })
			w.Crash(l)
			rm()
			if !op.Done || !op.OK {
				t.Logf("write not yet acknowledged at the crash: %+v", op)
			}
			a := (l + 1) % 3
			b := (l + 2) % 3
			if variant == "leader-store" {
				w.Crash(b) // only a, which lacks the commit, and the leader's store remain
				w.Restart(l)
			}
			stable(t, w, 3*time.Second)
			for _, i := range []int{l, a, b} {
				n := w.nodes[i]
				if !n.up {
					continue
				}
				waitFor(t, w, time.Second, fmt.Sprintf("node %d has v%d", i, v), func() bool { return storedLC(n) >= v })
				r := w.Read(i, "k0")
				waitFor(t, w, time.Second, "read", func() bool { return r.Done })
				if r.OK && r.Out.Value != "new" {
					t.Fatalf("node %d reads %q after recovery, want new", i, r.Out.Value)
				}
			}
			if val, ok := w.Checker.Chosen(v); !ok || !txHasPut(val, "k0", "new") {
				t.Fatalf("version %d does not hold the committed value", v)
			}
			w.Restart(l)
			w.Restart(b)
			stable(t, w, 3*time.Second)
			finish(t, w)
		})
	}
}

// 19. Crash at each durable-write point (Ceph's paxos_kill_at points), while the write is in
// flight (a random prefix of the in-flight writes survives) or just after it landed, then
// restart: the invariants of spec 5.13 hold (fc <= lc, every version in [fc, lc] present, lc
// never goes back, no two values at a version), and the cluster serves again.
func TestSpec9_19_CrashAtEachDurableWrite(t *testing.T) {
	type point struct {
		name string
		role Role
		is   func(tx *minimonv1.Transaction) bool
	}
	puts := func(key string) func(tx *minimonv1.Transaction) bool {
		return func(tx *minimonv1.Transaction) bool { return txPuts(tx, paxos.Bucket, key) }
	}
	points := []point{
		{"leader-collect", Leader, puts(paxos.KeyLastPN)},
		{"peon-collect", Peon, func(tx *minimonv1.Transaction) bool {
			return txPuts(tx, paxos.Bucket, paxos.KeyAcceptedPN) && !txPuts(tx, paxos.Bucket, paxos.KeyLastPN)
		}},
		{"leader-begin", Leader, puts(paxos.KeyPendingV)},
		{"peon-begin", Peon, puts(paxos.KeyPendingV)},
		{"leader-commit", Leader, puts(paxos.KeyLastCommitted)},
		{"peon-commit", Peon, puts(paxos.KeyLastCommitted)},
		{"election-epoch", Electing, func(tx *minimonv1.Transaction) bool { _, ok := election.PersistedEpoch(tx); return ok }},
	}
	for pi, pt := range points {
		for _, after := range []bool{false, true} {
			name := pt.name + "/in-flight"
			if after {
				name = pt.name + "/after"
			}
			t.Run(name, func(t *testing.T) {
				c := cfg3(1900 + uint64(pi))
				w, _ := specWorld(t, c)
				hit, armed := -1, false
				w.PersistHook = func(n *Node, tx *minimonv1.Transaction) time.Duration {
					if !armed || hit >= 0 || !pt.is(tx) || (pt.role != Electing && n.Role() != pt.role) {
						return 0
					}
					hit = n.idx
					if !after { // crash while this write is in flight
						inc := n.inc
						n.crashAtWrite = func() {
							if n.inc == inc {
								w.Crash(n.idx)
							}
						}
					}
					return 0
				}
				stable(t, w, 3*time.Second)
				writeOK(t, w, "k0", "seed", time.Second)
				armed = true
				// Collect and epoch writes happen at elections: kill the leader to cause one.
				if pt.name == "leader-collect" || pt.name == "peon-collect" || pt.name == "election-epoch" {
					w.Crash(leaderIdx(w))
				}
				waitFor(t, w, 3*time.Second, "write point reached", func() bool { return hit >= 0 })
				n := w.nodes[hit]
				if after {
					waitFor(t, w, 100*time.Millisecond, "write landed", func() bool { return len(n.writes) == 0 })
					w.Crash(hit)
				} else {
					waitFor(t, w, 100*time.Millisecond, "crash in flight", func() bool { return !n.up })
				}
				w.PersistHook = nil
				fc, lc := storedFC(n), storedLC(n)
				if fc > lc && lc > 0 {
					t.Fatalf("node %d after crash: fc %d > lc %d", hit, fc, lc)
				}
				n.ScanStore()
				run(t, w, 200*time.Millisecond)
				for i := range w.nodes {
					w.Restart(i)
				}
				// Writes resume, and every restarted member is admitted back into the quorum.
				writeOK(t, w, "k1", "after", 3*time.Second)
				stable(t, w, 3*time.Second)
				for _, m := range w.nodes {
					if f, l := storedFC(m), storedLC(m); f > l {
						t.Fatalf("node %d: fc %d > lc %d", m.idx, f, l)
					}
				}
				finish(t, w)
			})
		}
	}
}

// 20. COLLECT with a pn lower than a peon's promise: the leader retries with a higher pn. Leader
// a of {a,b} (after 0 died) has b promise its pn, then a is cut off before b's LAST reaches it;
// 0 returns and leads {0,b} with a pn of its own series, lower than b's promise.
func TestSpec9_20_CollectBelowPromise(t *testing.T) {
	c := cfg3(220)
	c.NoClients = true
	w, sn := specWorld(t, c)
	rmS := sn.add(steer(0))
	if l := stable(t, w, 2*time.Second); l != 0 {
		t.Fatalf("leader %d, want 0", l)
	}
	rmS()
	writeOK(t, w, "k0", "v", time.Second)
	w.Crash(0)
	a, b := 1, 2
	rmS = sn.add(steer(a))
	promise := w.nodes[b].storedU64(paxos.KeyAcceptedPN)
	rmL := sn.add(func(m *Msg) Verdict {
		if int(m.From) == b && int(m.To) == a && m.IsPaxos(minimonv1.PaxosMessage_LAST) {
			return Verdict{Drop: true}
		}
		return Verdict{}
	})
	waitFor(t, w, 3*time.Second, "b promises a's pn", func() bool { return w.nodes[b].storedU64(paxos.KeyAcceptedPN) > promise })
	promise = w.nodes[b].storedU64(paxos.KeyAcceptedPN)
	rmS()
	rmL()
	w.Crash(a)
	var collects, lasts []uint64
	sn.add(func(m *Msg) Verdict {
		if m.From == 0 && int(m.To) == b && m.IsPaxos(minimonv1.PaxosMessage_COLLECT) {
			collects = append(collects, m.Paxos.GetPn())
		}
		if int(m.From) == b && m.To == 0 && m.IsPaxos(minimonv1.PaxosMessage_LAST) {
			lasts = append(lasts, m.Paxos.GetPn())
		}
		return Verdict{}
	})
	w.Restart(0)
	rmS = sn.add(steer(0))
	if l := stable(t, w, 3*time.Second); l != 0 {
		t.Fatalf("leader %d, want 0", l)
	}
	rmS()
	if len(collects) < 2 || collects[0] >= promise || lasts[0] != promise || collects[len(collects)-1] <= promise {
		t.Fatalf("promise %d: COLLECT pns %v, LAST pns %v; want a first COLLECT below the promise, a LAST "+
			"carrying it, and a retry above it", promise, collects, lasts)
	}
	t.Logf("promise %d: COLLECT pns %v, LAST pns %v", promise, collects, lasts)
	writeOK(t, w, "k0", "after", time.Second)
	w.Restart(a)
	stable(t, w, 3*time.Second)
	finish(t, w)
}

// 21. Duplicate and stale ACCEPT or LAST from an earlier round are ignored. ACCEPTs: every one
// from a peon arrives three more times, late, across rounds, then the leader dies. LASTs: the
// first collect's LAST from a peon is lost, the collect times out, and during the next epoch's
// collect that stale LAST arrives three times before the fresh one.
func TestSpec9_21_StaleAcceptAndLast(t *testing.T) {
	t.Run("accept", func(t *testing.T) {
		w, sn := specWorld(t, cfg3(221))
		l := stable(t, w, 2*time.Second)
		p := peonOf(w, l)
		hit := 0
		rm := sn.add(func(m *Msg) Verdict {
			if int(m.From) == p && m.IsPaxos(minimonv1.PaxosMessage_ACCEPT) {
				hit++
				return Verdict{Delay: 40 * time.Millisecond, Dups: 3}
			}
			return Verdict{}
		})
		before := w.stats.PutsOK
		run(t, w, 2*time.Second)
		rm()
		if hit < 5 || w.stats.PutsOK-before < 5 {
			t.Fatalf("%d ACCEPTs duplicated, %d writes: the scenario did not happen", hit, w.stats.PutsOK-before)
		}
		w.Crash(l)
		stable(t, w, 3*time.Second)
		w.Restart(l)
		stable(t, w, 3*time.Second)
		finish(t, w)
	})
	t.Run("last", func(t *testing.T) {
		// The first LAST is lost: the leader repeats its COLLECT to the member that has not
		// promised, so the epoch completes without a collect timeout or a new election. The lost
		// LAST then turns up three times, late: it is ignored.
		c := cfg3(222)
		w, sn := specWorld(t, c)
		var stale *Msg
		sn.add(func(m *Msg) Verdict {
			if stale == nil && m.IsPaxos(minimonv1.PaxosMessage_LAST) {
				stale = m
				return Verdict{Drop: true}
			}
			return Verdict{}
		})
		l := stable(t, w, 4*time.Second)
		if stale == nil {
			t.Fatal("no LAST captured")
		}
		epoch := w.nodes[l].epoch()
		if epoch != stale.Paxos.GetEpoch() {
			t.Fatalf("the lost LAST cost an election: epoch %d, LAST was in %d", epoch, stale.Paxos.GetEpoch())
		}
		writeOK(t, w, "k0", "before", time.Second)
		for k := 0; k < 3; k++ {
			w.deliver(stale, 0)
		}
		writeOK(t, w, "k0", "after", time.Second)
		if e := w.nodes[l].epoch(); e != epoch || w.nodes[l].Role() != Leader {
			t.Fatalf("stale LASTs disturbed the quorum: leader %d role %v epoch %d (was %d)", l, w.nodes[l].Role(), e, epoch)
		}
		finish(t, w)
	})
}

// 22. A partitioned peon stops serving reads within its lease (mon_lease of the last grant) and
// leaves the quorum after LT (Ceph: bootstraps after 10 s; here 0.6 s); the majority side keeps
// serving reads and writes without an election (design 2).
func TestSpec9_22_PartitionedPeonLeaseExpiry(t *testing.T) {
	w, _ := specWorld(t, cfg3(223))
	l := stable(t, w, 2*time.Second)
	p := peonOf(w, l)
	q := 3 - l - p
	c := w.Config()
	run(t, w, 500*time.Millisecond)
	onP := readLoop(w, p, "k0", 5*time.Millisecond, 2*time.Second)
	onL := readLoop(w, l, "k0", 5*time.Millisecond, 2*time.Second)
	onQ := readLoop(w, q, "k0", 5*time.Millisecond, 2*time.Second)
	run(t, w, 300*time.Millisecond)
	cut := w.Now()
	epoch := w.nodes[l].epoch()
	elections := w.stats.Elections
	putsBefore := w.stats.PutsOK
	w.Isolate(p)
	run(t, w, time.Duration(float64(c.LeaseAckTimeout)*(1+c.ClockRateError))+2*c.Tick)
	if r := w.nodes[p].Role(); r == Peon {
		t.Fatalf("isolated peon still a peon %v after the cut", w.Now()-cut)
	}
	run(t, w, 1500*time.Millisecond)
	okP := onP.okTimes()
	if len(okP) == 0 || okP[0] >= cut {
		t.Fatal("peon served no read before the cut: the check is vacuous")
	}
	limit := cut + time.Duration(float64(c.Lease)*(1+c.ClockRateError))
	if lastOK := okP[len(okP)-1]; lastOK > limit {
		t.Fatalf("isolated peon served a read %v after the cut (lease %v)", lastOK-cut, c.Lease)
	}
	end := cut + 1500*time.Millisecond
	if g := onL.maxGap(cut, end); g > c.Lease {
		t.Fatalf("leader stopped serving reads for %v", g)
	}
	if g := onQ.maxGap(cut, end); g > c.Lease {
		t.Fatalf("majority peon stopped serving reads for %v", g)
	}
	if w.nodes[l].Role() != Leader || w.nodes[l].epoch() != epoch || w.stats.Elections != elections {
		t.Fatalf("the majority re-elected (epoch %d -> %d): design 2 says it must not", epoch, w.nodes[l].epoch())
	}
	if w.stats.PutsOK == putsBefore {
		t.Fatal("no write committed on the majority side")
	}
	t.Logf("last read on the isolated peon %v after the cut; leader/peon max read gap %v/%v",
		okP[len(okP)-1]-cut, onL.maxGap(cut, end), onQ.maxGap(cut, end))
	w.Heal()
	run(t, w, time.Second)
	finish(t, w)
}

// 23. An isolated old leader steps down (lease-ack timeout) and never commits: no split-brain
// writes. The majority elects a new leader and commits.
func TestSpec9_23_IsolatedLeaderNeverCommits(t *testing.T) {
	w, _ := specWorld(t, cfg3(224))
	l := stable(t, w, 2*time.Second)
	run(t, w, 300*time.Millisecond)
	c := w.Config()
	w.Isolate(l)
	lcAt := w.nodes[l].px().LastCommitted()
	var writes []*ScriptOp
	for k := 0; k < 30; k++ {
		k := k
		w.After(time.Duration(k)*20*time.Millisecond, func() {
			if w.nodes[l].up {
				writes = append(writes, w.Write(l, "k1", fmt.Sprint("split", k)))
			}
		})
	}
	run(t, w, time.Duration(float64(c.LeaseAckTimeout)*(1+c.ClockRateError))+c.Tick*2)
	if w.nodes[l].Role() == Leader {
		t.Fatal("isolated leader still leads after its lease-ack timeout")
	}
	nl := stable(t, w, 3*time.Second)
	if nl == l {
		t.Fatalf("isolated node leads")
	}
	writeOK(t, w, "k0", "majority", time.Second)
	run(t, w, 500*time.Millisecond)
	if got := storedLC(w.nodes[l]); got > lcAt {
		t.Fatalf("isolated leader committed: lc %d -> %d", lcAt, got)
	}
	for k, op := range writes {
		if op.OK {
			t.Fatalf("write %d on the isolated leader acknowledged", k)
		}
	}
	for k := 0; k < 30; k++ {
		if got := versionsWith(w, "k1", fmt.Sprint("split", k)); len(got) > 0 {
			t.Fatalf("split-brain write %d committed at %v", k, got)
		}
	}
	w.Heal()
	stable(t, w, 3*time.Second)
	finish(t, w)
}

// 24. A peon misses one COMMIT: it rejects the next LEASE (lc mismatch), serves nothing meanwhile,
// and is caught up by share_state on its LEASE_ACK (design 2), without an election and without
// leaving the quorum (Ceph: it times out and a re-election catches it up).
func TestSpec9_24_MissedCommit(t *testing.T) {
	w, sn := specWorld(t, cfg3(225))
	l := stable(t, w, 2*time.Second)
	p := peonOf(w, l)
	run(t, w, 300*time.Millisecond)
	var dropped uint64
	sn.add(func(m *Msg) Verdict {
		if dropped == 0 && int(m.To) == p && m.IsPaxos(minimonv1.PaxosMessage_COMMIT) && len(m.Paxos.GetValues()) == 1 {
			dropped = m.Paxos.GetLastCommitted()
			return Verdict{Drop: true}
		}
		return Verdict{}
	})
	epoch, elections := w.nodes[l].epoch(), w.stats.Elections
	readLoop(w, p, "k0", 3*time.Millisecond, 2*time.Second)
	var bad string
	caught := time.Duration(-1)
	watch(t, w, 2*time.Second, func() {
		n := w.nodes[p]
		if dropped == 0 || bad != "" {
			return
		}
		if n.Role() != Peon || n.epoch() != epoch {
			bad = fmt.Sprintf("peon left the quorum (%v epoch %d)", n.Role(), n.epoch())
		}
		if n.px().LastCommitted() < dropped && n.px().Readable(n.LocalNow()) {
			bad = fmt.Sprintf("peon readable at lc %d with v%d committed", n.px().LastCommitted(), dropped)
		}
		if caught < 0 && storedLC(n) >= dropped {
			caught = w.Now()
		}
	})
	if dropped == 0 {
		t.Fatal("no COMMIT dropped")
	}
	if bad != "" {
		t.Fatal(bad)
	}
	if caught < 0 {
		t.Fatalf("peon never caught up on v%d", dropped)
	}
	if w.stats.Elections != elections || w.nodes[l].epoch() != epoch {
		t.Fatalf("an election happened (%d -> %d)", elections, w.stats.Elections)
	}
	okAfter := 0
	readLoop(w, p, "k0", 5*time.Millisecond, 500*time.Millisecond)
	run(t, w, 600*time.Millisecond)
	for _, op := range w.scriptOps {
		if op.node == p && op.script.OK && op.call > caught {
			okAfter++
		}
	}
	if okAfter == 0 {
		t.Fatal("caught-up peon serves no reads (never re-granted a lease)")
	}
	finish(t, w)
}

// 26. Linearizable reads with no clock sync: clocks run at rates +e/2 and -e/2 (pairwise e, the
// bound) from unrelated origins; the slow-clock leader is cut off while every member serves
// reads, then leaders are killed repeatedly. Porcupine must accept the history (Ceph's absolute
// lease timestamps would let the old leader serve stale reads here).
func TestSpec9_26_ReadsWithoutClockSync(t *testing.T) {
	c := cfg3(226)
	e := c.ClockRateError
	c.Skew = []float64{-e / 2, e / 2, e / 2}
	w, sn := specWorld(t, c)
	rmS := sn.add(steer(0))
	if l := stable(t, w, 2*time.Second); l != 0 {
		t.Fatalf("leader %d, want the slow clock 0", l)
	}
	rmS()
	var logs []*readLog
	for i := range w.nodes {
		logs = append(logs, readLoop(w, i, "k0", 3*time.Millisecond, 6*time.Second))
	}
	run(t, w, 500*time.Millisecond)
	w.Isolate(0)
	stable(t, w, 3*time.Second)
	writeOK(t, w, "k0", "after-cut", time.Second)
	run(t, w, 300*time.Millisecond)
	w.Heal()
	for round := 0; round < 4; round++ {
		stable(t, w, 3*time.Second)
		run(t, w, 300*time.Millisecond)
		l := leaderIdx(w)
		w.Crash(l)
		w.After(300*time.Millisecond, func() { w.Restart(l) })
	}
	stable(t, w, 3*time.Second)
	served := 0
	for i, rl := range logs {
		if i != leaderIdx(w) {
			served += len(rl.okTimes())
		}
	}
	if served == 0 {
		t.Fatal("no read served by a peon: the check is vacuous")
	}
	t.Logf("%d reads served off the final leader", served)
	finish(t, w)
}

// 27. Single-mon cluster: writes commit without any message, reads are always allowed when no
// commit write is in flight.
func TestSpec9_27_SingleMon(t *testing.T) {
	c := DefaultConfig(227, 1)
	c.Trace, c.NoClients = true, true
	w, sn := specWorld(t, c)
	msgs := 0
	sn.add(func(m *Msg) Verdict { msgs++; return Verdict{} })
	if l := stable(t, w, time.Second); l != 0 {
		t.Fatalf("leader %d", l)
	}
	n := w.nodes[0]
	var bad string
	check := func() {
		if bad == "" && n.Role() == Leader && len(n.writes) == 0 && !n.px().Readable(n.LocalNow()) {
			bad = fmt.Sprintf("single mon not readable at %v with no write in flight", w.Now())
		}
	}
	for k := 0; k < 20; k++ {
		op := w.Write(0, "k0", fmt.Sprint("v", k))
		waitFor(t, w, time.Second, "write", func() bool { check(); return op.Done })
		if !op.OK {
			t.Fatalf("write %d: %+v", k, op)
		}
		r := w.Read(0, "k0")
		waitFor(t, w, time.Second, "read", func() bool { check(); return r.Done })
		if !r.OK || r.Out.Value != fmt.Sprint("v", k) {
			t.Fatalf("read after write %d: %+v", k, r)
		}
		watch(t, w, 700*time.Millisecond, check) // longer than a lease: no renewal needed
	}
	if bad != "" {
		t.Fatal(bad)
	}
	if msgs != 0 || w.stats.Sent != 0 {
		t.Fatalf("single mon sent %d messages (%d counted)", w.stats.Sent, msgs)
	}
	finish(t, w)
}

// 28. After more than 750 commits with Ceph's trim options (paxos_min 500, trim_min 250,
// trim_max 500) the log is trimmed, keeping >= paxos_min versions, identically on every member.
func TestSpec9_28_Trim(t *testing.T) {
	c := cfg3(228)
	c.NoClients, c.Trace = true, false
	c.PaxosMin, c.PaxosTrimMin, c.PaxosTrimMax = 500, 250, 500
	w, _ := specWorld(t, c)
	l := stable(t, w, 2*time.Second)
	for k := 0; k < 800; k++ {
		op := w.Write(l, fmt.Sprint("k", k%7), fmt.Sprint("v", k))
		waitFor(t, w, time.Second, "write", func() bool { return op.Done })
		if !op.OK {
			t.Fatalf("write %d: %+v", k, op)
		}
	}
	run(t, w, 500*time.Millisecond)
	lc := storedLC(w.nodes[l])
	fc := storedFC(w.nodes[l])
	if fc <= 1 || lc < 800 {
		t.Fatalf("leader fc %d lc %d: no trim after %d commits", fc, lc, lc)
	}
	for _, n := range w.nodes {
		if f, l2 := storedFC(n), storedLC(n); f != fc || l2 != lc {
			t.Fatalf("node %d fc %d lc %d, leader fc %d lc %d", n.idx, f, l2, fc, lc)
		}
		if lc-fc+1 < c.PaxosMin {
			t.Fatalf("kept %d versions, want >= %d", lc-fc+1, c.PaxosMin)
		}
		for v := uint64(1); v < fc; v++ {
			if val, _ := n.store.Get(paxos.Bucket, pxKey(v)); val != nil {
				t.Fatalf("node %d still holds trimmed version %d (fc %d)", n.idx, v, fc)
			}
		}
	}
	t.Logf("lc %d fc %d on all", lc, fc)
	finish(t, w)
}
