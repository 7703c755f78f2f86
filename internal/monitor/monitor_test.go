package monitor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// testMon is one Monitor of a test cluster, with a client connection to it.
type testMon struct {
	t      *testing.T
	cfg    Config
	m      *Monitor
	cancel context.CancelFunc
	done   chan error
	cc     *grpc.ClientConn
	c      minimonv1.MonitorClient
}

// testConfig is DefaultConfig for a monitor of a test cluster.
func testConfig(name, dir, addr string, members []Member) Config {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Addr, cfg.InitialMembers = name, dir, addr, members
	// The host's free space must not decide a test's health (MON_DISK_LOW at the default 30%
	// fired on a shared disk with 29% free); tests of the disk checks set their own thresholds.
	cfg.MonDataAvailWarn, cfg.MonDataAvailCrit = 0, 0
	return cfg
}

// newCluster reserves n loopback addresses and returns the configs of a new cluster a, b, c...
func newCluster(t *testing.T, n int) ([]Config, []net.Listener) {
	t.Helper()
	var members []Member
	var lis []net.Listener
	for i := range n {
		l := listen(t)
		lis = append(lis, l)
		members = append(members, Member{Name: string(rune('a' + i)), Addr: l.Addr().String()})
	}
	root := t.TempDir()
	cfgs := make([]Config, n)
	for i, mb := range members {
		cfgs[i] = testConfig(mb.Name, filepath.Join(root, mb.Name), mb.Addr, members)
	}
	return cfgs, lis
}

// start runs a Monitor for cfg; lis nil listens on cfg.Addr again (a restart).
func start(t *testing.T, cfg Config, lis net.Listener) *testMon {
	t.Helper()
	var err error
	if lis == nil {
		if lis, err = net.Listen("tcp", cfg.Addr); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(cfg, zaptest.NewLogger(t).Named(cfg.Name), WithListener(lis))
	if err != nil {
		_ = lis.Close()
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tm := &testMon{t: t, cfg: cfg, m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { tm.done <- m.Run(ctx) }()
	tm.cc, err = grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	tm.c = minimonv1.NewMonitorClient(tm.cc)
	t.Cleanup(tm.stop)
	return tm
}

// stop cancels Run and waits for it (idempotent).
func (tm *testMon) stop() {
	if tm.cancel == nil {
		return
	}
	tm.cancel()
	tm.cancel = nil
	_ = tm.cc.Close()
	select {
	case err := <-tm.done:
		if err != nil {
			tm.t.Errorf("Run(%s) = %v", tm.cfg.Name, err)
		}
	case <-time.After(waitTimeout):
		tm.t.Errorf("Run(%s) did not return", tm.cfg.Name)
	}
}

func startAll(t *testing.T, cfgs []Config, lis []net.Listener) []*testMon {
	t.Helper()
	mons := make([]*testMon, len(cfgs))
	for i := range cfgs {
		var l net.Listener
		if lis != nil {
			l = lis[i]
		}
		mons[i] = start(t, cfgs[i], l)
	}
	return mons
}

func rpcCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// waitQuorum waits until every given monitor is leader or peon of one epoch with one leader
// and a quorum holding at least all of them, and returns the leader's index in mons.
func waitQuorum(t *testing.T, mons []*testMon) int {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last string
	for time.Now().Before(deadline) {
		leader, epoch, ok := -1, uint64(0), true
		var states []string
		for i, tm := range mons {
			ctx, cancel := rpcCtx(time.Second)
			st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
			cancel()
			if err != nil {
				ok = false
				states = append(states, err.Error())
				continue
			}
			states = append(states, fmt.Sprintf("%s:%s/e%d/q%v", st.GetName(), st.GetState(), st.GetElectionEpoch(), st.GetQuorum()))
			switch st.GetState() {
			case "leader":
				if leader >= 0 {
					ok = false
				}
				leader = i
			case "peon":
			default:
				ok = false
			}
			if len(st.GetQuorum()) < len(mons) {
				ok = false
			}
			if epoch != 0 && st.GetElectionEpoch() != epoch {
				ok = false
			}
			epoch = st.GetElectionEpoch()
		}
		last = strings.Join(states, " ")
		if ok && leader >= 0 {
			return leader
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no common quorum: %s", last)
	return -1
}

func kvSet(t *testing.T, tm *testMon, key, val string) uint64 {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	r, err := tm.c.KVSet(ctx, &minimonv1.KVSetRequest{Key: key, Value: []byte(val)})
	if err != nil {
		t.Fatalf("KVSet(%s) on %s: %v", key, tm.cfg.Name, err)
	}
	return r.GetVersion()
}

func kvGet(t *testing.T, tm *testMon, key string) string {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	r, err := tm.c.KVGet(ctx, &minimonv1.KVGetRequest{Key: key})
	if err != nil {
		t.Fatalf("KVGet(%s) on %s: %v", key, tm.cfg.Name, err)
	}
	return string(r.GetValue())
}

func TestClusterQuorumWritesAndFailover(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader, peon := mons[li], mons[(li+1)%3]

	// A write through a peon is forwarded to the leader; every monitor then reads it.
	if v := kvSet(t, peon, "k1", "v1"); v == 0 {
		t.Fatal("KVSet returned version 0 for a change")
	}
	for _, tm := range mons {
		if got := kvGet(t, tm, "k1"); got != "v1" {
			t.Fatalf("KVGet on %s = %q, want v1", tm.cfg.Name, got)
		}
	}
	kvSet(t, leader, "k2", "v2")
	// Refused writes keep the service's code through forwarding; nothing is proposed.
	ctx, cancel := rpcCtx(waitTimeout)
	_, err := peon.c.KVSet(ctx, &minimonv1.KVSetRequest{Key: "", Value: []byte("x")})
	cancel()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("KVSet with an empty key through a peon: %v, want InvalidArgument", err)
	}
	ctx, cancel = rpcCtx(waitTimeout)
	_, err = peon.c.KVGet(ctx, &minimonv1.KVGetRequest{Key: "absent"})
	cancel()
	if status.Code(err) != codes.NotFound {
		t.Fatalf("KVGet of an absent key: %v, want NotFound", err)
	}

	// Status through the quorum: healthy, monmap committed as epoch 1.
	ctx, cancel = rpcCtx(waitTimeout)
	st, err := peon.c.Status(ctx, &minimonv1.StatusRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if st.GetHealth().GetStatus() != HealthOK || st.GetMonmapEpoch() != 1 || st.GetFsid() != leader.m.FSID() ||
		st.GetLeader() != leader.cfg.Name || len(st.GetQuorumNames()) != 3 {
		t.Fatalf("Status = %v", st)
	}

	// Stop the leader: the two others elect and accept writes.
	leader.stop()
	rest := []*testMon{mons[(li+1)%3], mons[(li+2)%3]}
	waitQuorum(t, rest)
	kvSet(t, rest[0], "k3", "v3")
	kvSet(t, rest[1], "k1", "v1b")
	ctx, cancel = rpcCtx(waitTimeout)
	h, err := rest[0].c.Health(ctx, &minimonv1.HealthRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if h.GetStatus() != HealthWarn || !strings.Contains(h.GetChecks()[CheckMonDown].GetSummary(), "1/3 mons down") {
		t.Fatalf("Health with the leader down = %v", h)
	}

	// Restart it on its data dir: it rejoins and serves the latest value.
	mons[li] = start(t, cfgs[li], nil)
	waitQuorum(t, mons)
	if got := kvGet(t, mons[li], "k1"); got != "v1b" {
		t.Fatalf("restarted %s reads k1 = %q, want v1b", cfgs[li].Name, got)
	}

	// Restart all three: every committed write is still there.
	for _, tm := range mons {
		tm.stop()
	}
	mons = startAll(t, cfgs, nil)
	waitQuorum(t, mons)
	want := map[string]string{"k1": "v1b", "k2": "v2", "k3": "v3"}
	for _, tm := range mons {
		for k, v := range want {
			if got := kvGet(t, tm, k); got != v {
				t.Fatalf("after a full restart %s reads %s = %q, want %q", tm.cfg.Name, k, got, v)
			}
		}
	}
	// The grpc health service reports SERVING in quorum.
	ctx, cancel = rpcCtx(waitTimeout)
	hr, err := healthpb.NewHealthClient(mons[0].cc).Check(ctx, &healthpb.HealthCheckRequest{})
	cancel()
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check = %v, %v", hr, err)
	}
	// Metrics: each monitor has its own registry; exactly one reports itself leader.
	leaders := 0
	for _, tm := range mons {
		got := gather(t, tm.m)
		leaders += int(got["minimon_is_leader"])
		if got["minimon_quorum_size"] != 3 || got["minimon_election_epoch"] == 0 || got["minimon_store_size_bytes"] == 0 {
			t.Fatalf("metrics of %s: %v", tm.cfg.Name, got)
		}
	}
	if leaders != 1 {
		t.Fatalf("%d monitors report minimon_is_leader 1", leaders)
	}
}

// gather sums every sample of each minimon_ family of m's registry.
func gather(t *testing.T, m *Monitor) map[string]float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "minimon_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			switch {
			case mt.GetCounter() != nil:
				out[f.GetName()] += mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				out[f.GetName()] += mt.GetGauge().GetValue()
			case mt.GetHistogram() != nil:
				out[f.GetName()] += float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestRecoverUnaryTurnsPanicIntoInternal(t *testing.T) {
	m := &Monitor{lg: zaptest.NewLogger(t)}
	_, err := m.recoverUnary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"},
		func(context.Context, any) (any, error) { panic("boom") })
	if status.Code(err) != codes.Internal {
		t.Fatalf("err = %v, want Internal", err)
	}
}

func TestNoQuorum(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	for _, l := range lis[1:] {
		_ = l.Close()
	}
	tm := start(t, cfgs[0], lis[0])

	// mon_status answers alone.
	ctx, cancel := rpcCtx(waitTimeout)
	st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if st.GetName() != "a" || st.GetRank() != 0 || st.GetState() == "leader" || st.GetState() == "peon" ||
		len(st.GetMonmap().GetMons()) != 3 || len(st.GetQuorum()) != 0 {
		t.Fatalf("MonStatus without quorum = %v", st)
	}
	if tm.m.Ready() {
		t.Fatal("Ready() without quorum")
	}
	ctx, cancel = rpcCtx(waitTimeout)
	hr, err := healthpb.NewHealthClient(tm.cc).Check(ctx, &healthpb.HealthCheckRequest{})
	cancel()
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health Check without quorum = %v, %v", hr, err)
	}

	// A write waits for its deadline, then fails with Unavailable.
	ctx, cancel = rpcCtx(300 * time.Millisecond)
	_, err = tm.c.KVSet(ctx, &minimonv1.KVSetRequest{Key: "k", Value: []byte("v")})
	cancel()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("KVSet without quorum: %v, want Unavailable", err)
	}
	ctx, cancel = rpcCtx(300 * time.Millisecond)
	_, err = tm.c.KVGet(ctx, &minimonv1.KVGetRequest{Key: "k"})
	cancel()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("KVGet without quorum: %v, want Unavailable", err)
	}
	ctx, cancel = rpcCtx(300 * time.Millisecond)
	_, err = tm.c.ConfigDump(ctx, &minimonv1.ConfigDumpRequest{})
	cancel()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("ConfigDump without quorum: %v, want Unavailable", err)
	}
}

func TestStoreIdentityChecks(t *testing.T) {
	cfgs, lis := newCluster(t, 1)
	_ = lis[0].Close()
	cfg := cfgs[0]

	// First start writes the identity; a second open while the first holds the lock fails.
	m, err := New(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	fsid := m.FSID()
	if fsid != DeriveFSID(cfg.InitialMembers) {
		t.Fatalf("fsid %s, want the one derived from the members %s", fsid, DeriveFSID(cfg.InitialMembers))
	}
	cfg2 := cfg
	cfg2.Addr = "127.0.0.1:1"
	if _, err := New(cfg2, zaptest.NewLogger(t)); !errors.Is(err, kvstore.ErrLocked) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("New on a locked store = %v, want ErrLocked", err)
	}
	// Run with a canceled context stops at once and closes everything.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}

	other := cfg
	other.FSID = "00000000-0000-5000-8000-000000000000"
	if _, err := New(other, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "belongs to cluster "+fsid) {
		t.Fatalf("New with another --fsid = %v", err)
	}
	renamed := testConfig("z", cfg.DataDir, cfg.Addr, []Member{{Name: "z", Addr: cfg.Addr}})
	if _, err := New(renamed, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "belongs to mon.a") {
		t.Fatalf("New with another --name = %v", err)
	}
	// Later starts need no --initial-members.
	again := cfg
	again.InitialMembers = nil
	m, err = New(again, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("restart without --initial-members: %v", err)
	}
	if m.FSID() != fsid {
		t.Fatalf("fsid changed across restarts: %s -> %s", fsid, m.FSID())
	}
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}

	// An empty data dir needs --initial-members (or --join).
	empty := testConfig("a", filepath.Join(t.TempDir(), "x"), cfg.Addr, nil)
	if _, err := New(empty, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "--initial-members") {
		t.Fatalf("New on an empty store without members = %v", err)
	}
	// --join is for the first start only.
	joinAgain := again
	joinAgain.Join = []string{"127.0.0.1:1"}
	if _, err := New(joinAgain, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "already initialized") {
		t.Fatalf("New with --join on an initialized store = %v", err)
	}
}

func TestCorruptStoreRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StoreFile), []byte(strings.Repeat("not a bbolt file ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("a", dir, "127.0.0.1:1", []Member{{Name: "a", Addr: "127.0.0.1:1"}})
	_, err := New(cfg, zaptest.NewLogger(t))
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("New on a corrupt store = %v, want a one-line error", err)
	}
}

func TestDeriveFSIDOrderIndependent(t *testing.T) {
	a := []Member{{"a", "h:1"}, {"b", "h:2"}, {"c", "h:3"}}
	b := []Member{{"c", "h:3"}, {"a", "h:1"}, {"b", "h:2"}}
	if DeriveFSID(a) != DeriveFSID(b) {
		t.Fatal("fsid depends on the order of the member list")
	}
	if !uuidRE.MatchString(DeriveFSID(a)) {
		t.Fatalf("%s is not a UUID", DeriveFSID(a))
	}
	if DeriveFSID(a) == DeriveFSID(a[:2]) {
		t.Fatal("different member lists give the same fsid")
	}
}

func TestFullSyncOfALaggingMonitor(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	for i := range cfgs {
		// Trim eagerly so a monitor that misses a few writes can only catch up by a full sync.
		cfgs[i].PaxosMin, cfgs[i].PaxosTrimMin, cfgs[i].PaxosTrimMax = 2, 1, 100
	}
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	lag := (li + 1) % 3
	mons[lag].stop()
	rest := []*testMon{mons[li], mons[(li+2)%3]}
	waitQuorum(t, rest)
	for i := range 20 {
		kvSet(t, rest[i%2], fmt.Sprintf("k%02d", i), fmt.Sprint(i))
	}
	mons[lag] = start(t, cfgs[lag], nil)
	waitQuorum(t, mons)
	for i := range 20 {
		if got := kvGet(t, mons[lag], fmt.Sprintf("k%02d", i)); got != fmt.Sprint(i) {
			t.Fatalf("synced %s reads k%02d = %q", cfgs[lag].Name, i, got)
		}
	}
}

func TestInterruptedSyncResumesAtStart(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	kvSet(t, mons[li], "before", "1")
	// A peon stops; its store is left as a crash in the middle of a full sync leaves it.
	p := (li + 1) % 3
	mons[p].stop()
	st, err := kvstore.Open(filepath.Join(cfgs[p].DataDir, StoreFile), kvstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketMeta, Key: []byte(kvstore.KeySyncInProgress), Value: kvstore.U64Key(0)},
		{Kind: minimonv1.StoreOp_ERASE, Bucket: kvstore.BucketKV, Key: []byte("before")},
	}})
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	kvSet(t, mons[li], "after", "2")

	// At start it syncs again before it may vote or serve, then rejoins with every value.
	mons[p] = start(t, cfgs[p], nil)
	waitQuorum(t, mons)
	if got := kvGet(t, mons[p], "before"); got != "1" {
		t.Fatalf("before = %q after the resumed sync", got)
	}
	if got := kvGet(t, mons[p], "after"); got != "2" {
		t.Fatalf("after = %q after the resumed sync", got)
	}
}
