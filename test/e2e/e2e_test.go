package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minimon/minimon/client"
)

// monStatusJSON is the part of `monctl -f json mon-status` the tests read.
type monStatusJSON struct {
	Name          string  `json:"name"`
	Rank          int32   `json:"rank"`
	State         string  `json:"state"`
	ElectionEpoch uint64  `json:"election_epoch"`
	Quorum        []int32 `json:"quorum"`
	Paxos         struct {
		FirstCommitted uint64 `json:"first_committed"`
		LastCommitted  uint64 `json:"last_committed"`
	} `json:"paxos"`
}

// monStatusCLI asks one monitor through `monctl -m ADDR -f json mon-status`.
func (tc *testCluster) monStatusCLI(p *Proc) monStatusJSON {
	tc.t.Helper()
	code, out, errOut, err := Monctl(tc.ctx(), bins, "-m", p.Addr, "-f", "json", "--timeout", "5s", "mon-status")
	if err != nil || code != 0 {
		tc.t.Fatalf("monctl -m %s mon-status: exit %d, err %v, stderr %q", p.Addr, code, err, errOut)
	}
	var s monStatusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		tc.t.Fatalf("mon-status json %q: %v", out, err)
	}
	return s
}

// TestBringUp: three monitors started together form one quorum with one leader, HEALTH_OK, and
// a write through monctl is read back from every monitor.
func TestBringUp(t *testing.T) {
	tc := newCluster(t, Options{})
	tc.start()

	code, out, errOut := tc.monctl("-f", "json", "--timeout", "10s", "status")
	if code != 0 {
		t.Fatalf("monctl status: exit %d, stderr %q", code, errOut)
	}
	var st struct {
		FSID   string `json:"fsid"`
		Health struct {
			Status string `json:"status"`
		} `json:"health"`
		QuorumNames []string `json:"quorum_names"`
		Leader      string   `json:"leader"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json %q: %v", out, err)
	}
	if names := slices.Sorted(slices.Values(st.QuorumNames)); !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("quorum_names %v, want a b c", st.QuorumNames)
	}
	if st.Health.Status != "HEALTH_OK" || st.FSID == "" || st.Leader == "" {
		t.Errorf("status: health %q, fsid %q, leader %q", st.Health.Status, st.FSID, st.Leader)
	}

	if code, out, errOut := tc.monctl("config-key", "set", "greeting", "hello"); code != 0 {
		t.Fatalf("config-key set: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, p := range tc.Procs {
		code, out, errOut, err := Monctl(tc.ctx(), bins, "-m", p.Addr, "config-key", "get", "greeting")
		if err != nil || code != 0 || out != "hello" {
			t.Errorf("config-key get via mon.%s: exit %d, stdout %q, stderr %q, err %v", p.Name, code, out, errOut, err)
		}
	}
}

// ackLog records the writes a cluster acknowledged.
type ackLog struct {
	mu    sync.Mutex
	acked map[string]string
}

func (a *ackLog) add(k, v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.acked == nil {
		a.acked = map[string]string{}
	}
	a.acked[k] = v
}

func (a *ackLog) snapshot() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.acked))
	for k, v := range a.acked {
		out[k] = v
	}
	return out
}

// writeKeys writes n unique keys prefix-i sequentially, failing the test on any error.
func writeKeys(t *testing.T, ctx context.Context, cl *client.Client, acks *ackLog, prefix string, n int) {
	t.Helper()
	for i := range n {
		k, v := fmt.Sprintf("%s-%03d", prefix, i), fmt.Sprintf("v-%s-%d", prefix, i)
		if _, err := cl.KVSet(ctx, k, []byte(v)); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
		acks.add(k, v)
	}
}

// checkAcked reads every acknowledged key through cl.
func checkAcked(t *testing.T, ctx context.Context, cl *client.Client, acks *ackLog) {
	t.Helper()
	acked := acks.snapshot()
	if len(acked) == 0 {
		t.Fatal("no acknowledged writes to check")
	}
	for k, v := range acked {
		got, err := cl.KVGet(ctx, k)
		if err != nil || string(got) != v {
			t.Errorf("acknowledged write %s=%q lost: got %q, %v", k, v, got, err)
		}
	}
}

// TestKillLeader: kill -9 of the leader while a client writes; no acknowledged write is lost
// and the two survivors accept writes again.
func TestKillLeader(t *testing.T) {
	tc := newCluster(t, Options{})
	leader := tc.start()
	ctx := tc.ctx()
	var acks ackLog
	writeKeys(t, ctx, tc.cl, &acks, "before", 10)

	// A writer keeps going through the kill; a write whose outcome is unknown (its own
	// deadline passed) is not counted as acknowledged.
	killed := make(chan struct{})
	var afterKill int
	var wg sync.WaitGroup
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() {
		for i := 0; wctx.Err() == nil; i++ {
			k, v := fmt.Sprintf("during-%04d", i), fmt.Sprintf("v-during-%d", i)
			octx, cancel := context.WithTimeout(wctx, 10*time.Second)
			_, err := tc.cl.KVSet(octx, k, []byte(v))
			cancel()
			if err != nil {
				continue
			}
			acks.add(k, v)
			select {
			case <-killed:
				if afterKill++; afterKill == 5 {
					return
				}
			default:
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // let some writes be in flight at the kill
	tc.kill(leader)
	close(killed)
	wg.Wait()
	if afterKill < 5 {
		t.Fatalf("only %d writes acknowledged after the leader was killed", afterKill)
	}

	survivors := tc.others(leader)
	newLeader := tc.waitQuorum(survivors...)
	if newLeader == leader {
		t.Fatal("killed monitor still leader")
	}
	cl, err := tc.Client(addrsOf(survivors...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	writeKeys(t, ctx, cl, &acks, "after", 5)
	for _, p := range survivors {
		one, err := tc.Client(p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		checkAcked(t, ctx, one, &acks)
		_ = one.Close()
	}
}

// TestRejoin: the killed leader restarted on its data dir rejoins the quorum and serves the
// value written while it was down.
func TestRejoin(t *testing.T) {
	tc := newCluster(t, Options{})
	leader := tc.start()
	ctx := tc.ctx()
	if _, err := tc.cl.KVSet(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	tc.kill(leader)
	tc.waitQuorum(tc.others(leader)...)
	var version uint64
	for _, v := range []string{"v2", "v3", "v4"} {
		r, err := tc.cl.KVSet(ctx, "k", []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		version = r.GetVersion()
	}
	tc.restart(leader)
	tc.waitQuorum(tc.Procs...)
	// The value must be in the rejoined monitor's own store, not only behind a forwarded read.
	tc.waitCaughtUp(leader, version)
	one, err := tc.Client(leader.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	mustGet(t, ctx, one, "k", "v4")
	if s := tc.monStatusCLI(leader); !inQuorumState(s.State) {
		t.Errorf("restarted mon.%s state %q", leader.Name, s.State)
	}
}

// inQuorumState reports whether a mon-status state is inside a quorum.
func inQuorumState(state string) bool { return state == "leader" || state == "peon" }

// waitCaughtUp waits until p's own last_committed reaches version.
func (tc *testCluster) waitCaughtUp(p *Proc, version uint64) {
	tc.t.Helper()
	ctx := tc.ctx()
	for {
		s, err := MonStatus(ctx, tc.cl, p, 5*time.Second)
		if err == nil && s.GetPaxos().GetLastCommitted() >= version {
			return
		}
		if ctx.Err() != nil {
			tc.t.Fatalf("mon.%s never reached version %d: %v, %v", p.Name, version, s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFullSyncAndTrim: a monitor down while more than paxos_min + paxos_trim_min versions
// were committed catches up by a full sync, and every monitor trims its log.
func TestFullSyncAndTrim(t *testing.T) {
	const paxosMin, trimMin = 5, 5
	tc := newCluster(t, Options{Extra: []string{
		"--paxos-min", fmt.Sprint(paxosMin), "--paxos-trim-min", fmt.Sprint(trimMin)}})
	leader := tc.start()
	ctx := tc.ctx()
	down := tc.others(leader)[0]
	tc.kill(down)
	tc.waitQuorum(tc.others(down)...)

	before := tc.monStatusCLI(leader).Paxos.LastCommitted
	var acks ackLog
	const n = 4 * (paxosMin + trimMin)
	writeKeys(t, ctx, tc.cl, &acks, "sync", n)
	if lc := tc.monStatusCLI(leader).Paxos.LastCommitted; lc-before <= paxosMin+trimMin {
		t.Fatalf("only %d versions committed while mon.%s was down", lc-before, down.Name)
	}

	tc.restart(down)
	tc.waitQuorum(tc.Procs...)
	if !strings.Contains(down.Log(), "full sync done") {
		t.Errorf("mon.%s rejoined without a full sync (no \"full sync done\" in its log)", down.Name)
	}
	one, err := tc.Client(down.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	checkAcked(t, ctx, one, &acks)

	// One more write, so every monitor has seen a commit after the sync; then each one's
	// window must be trimmed to about paxos_min + paxos_trim_min versions.
	if _, err := tc.cl.KVSet(ctx, "sync-last", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var last map[string]monStatusJSON
	for {
		last = map[string]monStatusJSON{}
		ok := true
		var lcs []uint64
		for _, p := range tc.Procs {
			s := tc.monStatusCLI(p)
			last[p.Name] = s
			lcs = append(lcs, s.Paxos.LastCommitted)
			if s.Paxos.FirstCommitted <= 1 || s.Paxos.LastCommitted-s.Paxos.FirstCommitted > paxosMin+trimMin+paxosMin {
				ok = false
			}
		}
		if ok && slices.Min(lcs) == slices.Max(lcs) {
			t.Logf("paxos windows after the sync: %+v", last)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("log not trimmed on every monitor: %+v", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRestartAll: all three killed with -9 together and restarted keep every acknowledged
// write; then all three stopped with SIGTERM exit 0 and keep them again.
func TestRestartAll(t *testing.T) {
	tc := newCluster(t, Options{})
	tc.start()
	ctx := tc.ctx()
	var acks ackLog
	writeKeys(t, ctx, tc.cl, &acks, "gen1", 10)

	tc.KillAll()
	tc.start()
	checkAcked(t, ctx, tc.cl, &acks)
	writeKeys(t, ctx, tc.cl, &acks, "gen2", 10)

	for _, p := range tc.Procs {
		if err := p.Term(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := p.ExitErr(); err != nil {
			t.Errorf("mon.%s after SIGTERM: %v (want exit 0)", p.Name, err)
		}
	}
	tc.start()
	checkAcked(t, ctx, tc.cl, &acks)
}

// TestMinority: with only one of three alive a write fails (monctl exit 110 within --timeout)
// and a read never returns a stale value; once the others are back, the latest value is
// served by the monitor that had been alone.
func TestMinority(t *testing.T) {
	tc := newCluster(t, Options{})
	leader := tc.start()
	ctx := tc.ctx()
	if code, _, errOut := tc.monctl("config-key", "set", "k", "old"); code != 0 {
		t.Fatalf("set old: exit %d, %q", code, errOut)
	}
	// lone misses the newest write: it is down while the other two commit it.
	lone := tc.others(leader)[0]
	tc.kill(lone)
	tc.waitQuorum(tc.others(lone)...)
	if code, _, errOut := tc.monctl("config-key", "set", "k", "new"); code != 0 {
		t.Fatalf("set new: exit %d, %q", code, errOut)
	}
	newVersion := tc.lastCommittedOf(tc.others(lone))
	for _, p := range tc.others(lone) {
		tc.kill(p)
	}
	tc.restart(lone)

	// A write through monctl fails with ETIMEDOUT and one clear line, within --timeout.
	start := time.Now()
	code, out, errOut := tc.monctl("--timeout", "2s", "config-key", "set", "k", "lost")
	took := time.Since(start)
	if code != 110 {
		t.Errorf("write with 1 of 3 alive: exit %d, want 110 (stdout %q, stderr %q)", code, out, errOut)
	}
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "monctl: ") {
		t.Errorf("stderr is not one line \"monctl: <reason>\": %q", errOut)
	}
	if took > 2*time.Second+5*time.Second { // hang guard: --timeout must bound the command
		t.Errorf("monctl --timeout 2s took %v", took)
	}
	// Reads through the lone monitor (which holds "old") fail rather than return it.
	for range 3 {
		code, out, errOut = tc.monctl("--timeout", "1s", "config-key", "get", "k")
		if code == 0 {
			t.Fatalf("read with 1 of 3 alive returned %q (stale: the latest value is \"new\")", out)
		}
		if code != 110 {
			t.Errorf("read with 1 of 3 alive: exit %d, want 110 (stderr %q)", code, errOut)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	got, err := tc.cl.KVGet(rctx, "k")
	cancel()
	if err == nil || !isNoQuorum(err) {
		t.Errorf("client read with 1 of 3 alive: %q, %v (want a no-quorum error)", got, err)
	}
	if s := tc.monStatusCLI(lone); inQuorumState(s.State) {
		t.Errorf("lone monitor reports state %q", s.State)
	}

	for _, p := range tc.others(lone) {
		tc.restart(p)
	}
	tc.waitQuorum(tc.Procs...)
	tc.waitCaughtUp(lone, newVersion)
	one, err := tc.Client(lone.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	mustGet(t, ctx, one, "k", "new")
}

// lastCommittedOf returns the highest last_committed among procs.
func (tc *testCluster) lastCommittedOf(procs []*Proc) uint64 {
	tc.t.Helper()
	var lc uint64
	for _, p := range procs {
		lc = max(lc, tc.monStatusCLI(p).Paxos.LastCommitted)
	}
	return lc
}

// TestHuntDeadFirst: a client given a dead monitor first (killed, never started, or a port
// that accepts and never answers) hunts to a live one.
func TestHuntDeadFirst(t *testing.T) {
	tc := newCluster(t, Options{})
	leader := tc.start()
	dead := tc.others(leader)[0]
	tc.kill(dead)
	tc.waitQuorum(tc.others(dead)...)
	live := tc.others(dead)[0]
	spare, err := FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	mute := newMuteListener(t)

	ctx := tc.ctx()
	for _, eps := range [][]string{
		{dead.Addr, live.Addr},
		{spare[0], dead.Addr, live.Addr},
		{mute, live.Addr},
	} {
		// The first endpoint a client tries is random: repeat so the dead one comes first
		// in most runs.
		for i := range 4 {
			cl, err := tc.Client(eps...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cl.KVSet(ctx, fmt.Sprintf("hunt-%d", i), []byte("x")); err != nil {
				t.Errorf("client over %v: %v", eps, err)
			}
			_ = cl.Close()
		}
		for range 2 {
			code, _, errOut, err := Monctl(ctx, bins, "-m", strings.Join(eps, ","), "--timeout", "10s", "status")
			if err != nil || code != 0 {
				t.Errorf("monctl -m %v status: exit %d, stderr %q, err %v", eps, code, errOut, err)
			}
		}
	}
}

// TestForeignFSID: monitors of another cluster (another --fsid, or another member list and so
// another derived fsid) that point at our monitors are ignored: election epoch, quorum,
// monmap and data unchanged, and neither stranger gets into a quorum.
func TestForeignFSID(t *testing.T) {
	tc := newCluster(t, Options{})
	tc.start()
	ctx := tc.ctx()
	if _, err := tc.cl.KVSet(ctx, "k", []byte("ours")); err != nil {
		t.Fatal(err)
	}
	before, err := tc.cl.MonStat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lcBefore := tc.lastCommitted()

	addrs, err := FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := tc.Procs[0].Addr, tc.Procs[1].Addr, tc.Procs[2].Addr
	strangers := []*Proc{
		tc.NewProc("d", addrs[0], fmt.Sprintf("a=%s,b=%s,c=%s,d=%s", a, b, c, addrs[0]),
			"--fsid", "0e2e0e2e-0000-4000-8000-00000000000d"),
		tc.NewProc("e", addrs[1], fmt.Sprintf("a=%s,b=%s,e=%s", a, b, addrs[1])),
	}
	for _, p := range strangers {
		tc.track(p)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until our monitors have seen the strangers' messages (so the check below is not
	// vacuous), then a little more for any effect to show.
	for !slices.ContainsFunc(tc.Procs, func(p *Proc) bool { return strings.Contains(p.Log(), "another cluster") }) {
		if ctx.Err() != nil {
			t.Fatal("no monitor logged envelopes of another cluster")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)

	after, err := tc.cl.MonStat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.GetElectionEpoch() != before.GetElectionEpoch() || !slices.Equal(after.GetQuorum(), before.GetQuorum()) ||
		after.GetMonmap().GetEpoch() != before.GetMonmap().GetEpoch() || len(after.GetMonmap().GetMons()) != 3 {
		t.Errorf("cluster changed by strangers: before %v, after %v", before, after)
	}
	tc.checkUnchanged("strangers of another cluster", lcBefore)
	mustGet(t, ctx, tc.cl, "k", "ours")
	for _, p := range strangers {
		s, err := MonStatus(ctx, tc.cl, p, 5*time.Second)
		if err != nil {
			t.Errorf("stranger mon.%s: %v", p.Name, err)
			continue
		}
		if InQuorum(s) {
			t.Errorf("stranger mon.%s got into a quorum: %v", p.Name, s)
		}
		if !p.Running() {
			t.Errorf("stranger mon.%s exited: %v", p.Name, p.ExitErr())
		}
	}
}

// errIs is errors.Is with a nil-safe message for test output.
func errIs(err, target error) bool { return err != nil && errors.Is(err, target) }
