package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/minimon/minimon/test/e2e"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testSeed is SEED from the environment, or a fresh one; it is logged, and printed again with
// the replay command when the test fails.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay: SEED=%d make test-faults)", seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d; replay: SEED=%d make test-faults", seed, seed)
		}
	})
	return seed
}

func long() bool { return os.Getenv("FAULTS_LONG") == "1" }

type faultKind int

const (
	killLeader faultKind = iota
	killPeon
	pauseLeader
	pausePeon
	isolateLeader
	isolatePeon
	leaderPeonCut // the leader cut from one peon only
	bridge        // A and B cannot talk, both reach the others
	splitMinority // 5 monitors: two cut from three (the leader on either side)
	numFaults
)

var faultNames = [...]string{"kill -9 leader", "kill -9 peon", "pause leader", "pause peon", "isolate leader",
	"isolate peon", "cut leader from one peon", "bridge", "split 2|3"}

// disturbsNoQuorum: faults that leave the leader with a healthy majority, so design.md 4 says
// no election may happen while they last.
func disturbsNoQuorum(k faultKind, leaderInMinority bool) bool {
	switch k {
	case killPeon, pausePeon, isolatePeon, leaderPeonCut, bridge:
		return true
	case splitMinority:
		return !leaderInMinority
	}
	return false
}

// runSchedule drives steps faults drawn from seed against an n-monitor cluster under load.
func runSchedule(t *testing.T, n, steps int, minDur, maxDur time.Duration) {
	seed := testSeed(t)
	fc := newFCluster(t, n)
	ctx := context.Background()
	if _, _, took, err := fc.waitFullQuorum(ctx); err != nil {
		t.Fatalf("cold start: %v", err)
	} else {
		t.Logf("cold start: full quorum of %d in %v", n, took.Round(time.Millisecond))
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	rec := newRecorder()
	lctx, stop := context.WithCancel(ctx)
	ld := startLoad(lctx, t, fc, rec, 4, seed)
	stopLoad := func() { stop(); ld.wait() }
	defer stopLoad()

	startEpoch, startWon := fc.maxEpoch(ctx), fc.electionsWon()
	var worstRecover, worstGapPeon time.Duration
	quietElections := 0
	for i := range steps {
		l, e0, took, err := fc.waitFullQuorum(ctx)
		if err != nil {
			t.Fatalf("step %d: no full quorum within %v after the previous heal: %v (seed %d)", i, recoverWait, err, seed)
		}
		worstRecover = max(worstRecover, took)
		var peons []*e2e.Proc
		for _, p := range fc.c.Procs {
			if p != l {
				peons = append(peons, p)
			}
		}
		kind := faultKind(rng.IntN(int(numFaults)))
		if n < 5 && kind == splitMinority {
			kind = isolateLeader
		}
		dur := minDur + time.Duration(rng.Int64N(int64(maxDur-minDur)+1))
		peon := peons[rng.IntN(len(peons))]
		desc := faultNames[kind]
		leaderInMinority := false
		switch kind {
		case killLeader:
			err = l.Kill()
		case killPeon:
			err = peon.Kill()
			desc += " " + peon.Name
		case pauseLeader:
			fc.Pause(l)
		case pausePeon:
			fc.Pause(peon)
			desc += " " + peon.Name
		case isolateLeader:
			err = fc.Isolate(l)
		case isolatePeon:
			err = fc.Isolate(peon)
			desc += " " + peon.Name
		case leaderPeonCut:
			err = fc.CutLink(l, peon)
			desc += " " + peon.Name
		case bridge:
			all := slices.Clone(fc.c.Procs)
			rng.Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
			err = fc.CutLink(all[0], all[1])
			desc += fmt.Sprintf(" %s-/-%s", all[0].Name, all[1].Name)
		case splitMinority:
			all := slices.Clone(peons)
			rng.Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
			side := all[:2]
			if rng.IntN(2) == 0 {
				side = []*e2e.Proc{l, all[0]}
				leaderInMinority = true
			}
			err = fc.Split(side)
			desc += " minority " + procNames(side)
		}
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, desc, err)
		}
		from := rec.now()
		time.Sleep(dur)
		to := rec.now()
		gap := rec.longestWriteGap(from, to)
		note := ""
		if disturbsNoQuorum(kind, leaderInMinority) {
			s, serr := fc.status(ctx, l, 2*time.Second)
			switch {
			case serr != nil:
				t.Errorf("step %d (%s): leader mon.%s did not answer: %v (seed %d)", i, desc, l.Name, serr, seed)
			case s.GetState() != "leader" || s.GetElectionEpoch() != e0:
				t.Errorf("step %d (%s): the healthy quorum was disturbed: mon.%s went from leader at epoch %d to %s at epoch %d (seed %d)",
					i, desc, l.Name, e0, s.GetState(), s.GetElectionEpoch(), seed)
			default:
				note = ", leader epoch unchanged"
			}
			if kind == pausePeon || kind == killPeon {
				worstGapPeon = max(worstGapPeon, gap)
			}
			if s != nil && s.GetElectionEpoch() == e0 {
				quietElections++
			}
		}
		// Heal.
		fc.Resume(l)
		fc.Resume(peon)
		if err := fc.net.Heal(); err != nil {
			t.Fatal(err)
		}
		for _, p := range fc.c.Procs {
			if !p.Running() {
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Logf("step %d/%d: %s for %v (leader mon.%s epoch %d); longest write gap %v%s; previous recovery %v",
			i+1, steps, desc, dur.Round(time.Millisecond), l.Name, e0, gap.Round(time.Millisecond), note, took.Round(time.Millisecond))
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
	}
	endEpoch, endWon := fc.maxEpoch(ctx), fc.electionsWon()
	finalChecks(ctx, t, fc, rec, stopLoad, seed)
	t.Logf("figures: %d steps, election epoch %d -> %d, %d elections won, %d peon faults without an election, worst recovery to a full quorum %v, worst write gap during a peon kill/pause %v",
		steps, startEpoch, endEpoch, endWon-startWon, quietElections, worstRecover.Round(time.Millisecond), worstGapPeon.Round(time.Millisecond))
}

func TestFaults3(t *testing.T) {
	if long() {
		runSchedule(t, 3, 60, time.Second, 5*time.Second)
		return
	}
	runSchedule(t, 3, 10, time.Second, 3*time.Second)
}

func TestFaults5(t *testing.T) {
	if long() {
		runSchedule(t, 5, 40, time.Second, 5*time.Second)
		return
	}
	runSchedule(t, 5, 6, time.Second, 3*time.Second)
}

// TestPausedPeonKeepsWrites: SIGSTOP one peon for 3 leases; writes through the leader go on
// with at most about one lease of stall, and no election happens.
func TestPausedPeonKeepsWrites(t *testing.T) {
	seed := testSeed(t)
	fc := newFCluster(t, 3)
	ctx := context.Background()
	l, e0, _, err := fc.waitFullQuorum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	lctx, stop := context.WithCancel(ctx)
	ld := startLoad(lctx, t, fc, rec, 3, seed)
	stopLoad := func() { stop(); ld.wait() }
	defer stopLoad()
	time.Sleep(time.Second)
	peon := fc.c.Procs[0]
	if peon == l {
		peon = fc.c.Procs[1]
	}
	from, won0 := rec.now(), fc.electionsWon()
	fc.Pause(peon)
	time.Sleep(3 * lease)
	s, err := fc.status(ctx, l, 2*time.Second)
	fc.Resume(peon)
	resumed := rec.now()
	time.Sleep(2 * time.Second)
	to := rec.now()
	if err != nil {
		t.Fatalf("leader mon.%s: %v", l.Name, err)
	}
	gap := rec.longestWriteGap(from, to)
	after, err2 := fc.status(ctx, l, 2*time.Second)
	won := fc.electionsWon() - won0
	t.Logf("peon mon.%s paused for %v: longest gap between acknowledged writes %v (pause..resume+2s); leader epoch %d before, %d during, %d 2 s after resume (%v); %d elections after the resume",
		peon.Name, 3*lease, gap.Round(time.Millisecond), e0, s.GetElectionEpoch(), after.GetElectionEpoch(), err2, won)
	if gap > 4*time.Second {
		t.Errorf("writes stalled %v while one peon was paused (bound 4 s, lease %v)", gap, lease)
	}
	if s.GetState() != "leader" || s.GetElectionEpoch() != e0 {
		t.Errorf("a paused peon caused an election: leader mon.%s %s at epoch %d, was %d", l.Name, s.GetState(), s.GetElectionEpoch(), e0)
	}
	// Known daemon behaviour (reported): the resumed peon's lease timeout fires before it
	// reads the leader's messages, so it bootstraps, syncs and is admitted by one election.
	// More than that one admission is a storm.
	if won > 1 {
		t.Errorf("the resumed peon caused %d elections (leader epoch %d -> %d, resume at %v), want at most one admission",
			won, e0, after.GetElectionEpoch(), resumed)
	}
	finalChecks(ctx, t, fc, rec, stopLoad, seed)
}

// TestIsolatedPeonNoElection: a peon cut from every monitor for several seconds starts no
// election that disturbs the quorum; after the heal it rejoins, with at most a couple of
// (admission) elections.
func TestIsolatedPeonNoElection(t *testing.T) {
	seed := testSeed(t)
	fc := newFCluster(t, 3)
	ctx := context.Background()
	l, e0, _, err := fc.waitFullQuorum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	lctx, stop := context.WithCancel(ctx)
	ld := startLoad(lctx, t, fc, rec, 3, seed)
	stopLoad := func() { stop(); ld.wait() }
	defer stopLoad()
	time.Sleep(500 * time.Millisecond)
	peon := fc.c.Procs[2]
	if peon == l {
		peon = fc.c.Procs[1]
	}
	if err := fc.Isolate(peon); err != nil {
		t.Fatal(err)
	}
	from, won0 := rec.now(), fc.electionsWon()
	time.Sleep(5 * time.Second)
	s, err := fc.status(ctx, l, 2*time.Second)
	ps, perr := fc.status(ctx, peon, 2*time.Second)
	gap := rec.longestWriteGap(from, rec.now())
	wonCut := fc.electionsWon() - won0
	if err := fc.net.Heal(); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("leader mon.%s: %v", l.Name, err)
	}
	if wonCut != 0 {
		t.Errorf("%d elections while the peon was cut off", wonCut)
	}
	t.Logf("peon mon.%s cut for 5 s: leader epoch %d -> %d, peon %s at epoch %d (%v), longest write gap %v",
		peon.Name, e0, s.GetElectionEpoch(), ps.GetState(), ps.GetElectionEpoch(), perr, gap.Round(time.Millisecond))
	if s.GetState() != "leader" || s.GetElectionEpoch() != e0 {
		t.Errorf("the isolated peon disturbed the quorum: mon.%s %s at epoch %d, was leader at %d", l.Name, s.GetState(), s.GetElectionEpoch(), e0)
	}
	if gap > 4*time.Second {
		t.Errorf("writes stalled %v while one peon was cut off", gap)
	}
	_, e1, took, err := fc.waitFullQuorum(ctx)
	if err != nil {
		t.Fatalf("the peon did not rejoin within %v: %v", recoverWait, err)
	}
	elections := fc.electionsWon() - won0
	t.Logf("rejoin after heal: full quorum in %v, epoch %d -> %d (%d elections won)", took.Round(time.Millisecond), e0, e1, elections)
	if elections > 2 {
		t.Errorf("rejoining took %d elections (epoch %d -> %d), want at most 2", elections, e0, e1)
	}
	finalChecks(ctx, t, fc, rec, stopLoad, seed)
}

// TestKillLeaderRestart: kill -9 of the leader under load, then restart; every acknowledged
// write is there and the history is linearizable.
func TestKillLeaderRestart(t *testing.T) {
	seed := testSeed(t)
	fc := newFCluster(t, 3)
	ctx := context.Background()
	l, _, _, err := fc.waitFullQuorum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	lctx, stop := context.WithCancel(ctx)
	ld := startLoad(lctx, t, fc, rec, 4, seed)
	stopLoad := func() { stop(); ld.wait() }
	defer stopLoad()
	time.Sleep(time.Second)
	from := rec.now()
	if err := l.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	t.Logf("leader mon.%s killed: longest write gap over the next 1.5 s %v", l.Name, rec.longestWriteGap(from, rec.now()).Round(time.Millisecond))
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	finalChecks(ctx, t, fc, rec, stopLoad, seed)
}
