package monitor

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func monAdd(t *testing.T, tm *testMon, name, addr string) (*minimonv1.MonAddReply, error) {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	return tm.c.MonAdd(ctx, &minimonv1.MonAddRequest{Name: name, Addr: addr})
}

func monRemove(t *testing.T, tm *testMon, name string) (*minimonv1.MonRemoveReply, error) {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	for {
		r, err := tm.c.MonRemove(ctx, &minimonv1.MonRemoveRequest{Name: name})
		// Unavailable: a peon forwarded to a leader that just went away (the client library
		// retries this the same way; mon remove is idempotent).
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return r, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRemoved waits for tm's Run to return ErrRemoved (and keeps stop from waiting again).
func waitRemoved(t *testing.T, tm *testMon) {
	t.Helper()
	select {
	case err := <-tm.done:
		if !errors.Is(err, ErrRemoved) {
			t.Fatalf("Run(%s) = %v, want ErrRemoved", tm.cfg.Name, err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("Run(%s) did not return after its removal", tm.cfg.Name)
	}
	tm.cancel()
	tm.cancel = nil
	_ = tm.cc.Close()
}

// quorumOf returns the quorum names as tm reports them.
func quorumOf(t *testing.T, tm *testMon) []string {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	qs, err := tm.c.QuorumStatus(ctx, &minimonv1.QuorumStatusRequest{})
	if err != nil {
		t.Fatalf("QuorumStatus on %s: %v", tm.cfg.Name, err)
	}
	return qs.GetQuorumNames()
}

func joinConfig(name, dir, addr string, join ...string) Config {
	cfg := testConfig(name, dir, addr, nil)
	cfg.Join = join
	return cfg
}

// Scenarios 36, 37 and 39 (add offline, join by --join with a full sync, remove a live member)
// plus the command errors.
func TestMemberAddJoinRemove(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	dLis := listen(t)
	dAddr := dLis.Addr().String()
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	peon := mons[(li+1)%3]
	// More versions than paxos_max_join_drift: the new monitor must sync the store.
	for i := range 12 {
		kvSet(t, mons[li], fmt.Sprintf("k%02d", i), fmt.Sprint(i))
	}

	// mon add through a peon (forwarded): N = 4 at once, with d offline.
	r, err := monAdd(t, peon, "d", dAddr)
	if err != nil {
		t.Fatalf("mon add d: %v", err)
	}
	if r.GetMessage() != "adding mon.d at "+dAddr || r.GetMonmap().GetEpoch() != 2 || len(r.GetMonmap().GetMons()) != 4 ||
		rankOf(r.GetMonmap(), "d") != 3 {
		t.Fatalf("mon add d = %v", r)
	}
	// Idempotent for the same name and address; a clash of name or address is EEXIST.
	if r, err := monAdd(t, mons[li], "d", dAddr); err != nil || !strings.Contains(r.GetMessage(), "already exists") ||
		r.GetMonmap().GetEpoch() != 2 {
		t.Fatalf("mon add d again = %v, %v", r, err)
	}
	if _, err := monAdd(t, peon, "d", "127.0.0.1:1"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("mon add d at another address: %v, want AlreadyExists", err)
	}
	if _, err := monAdd(t, peon, "e", cfgs[0].Addr); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("mon add e at a's address: %v, want AlreadyExists", err)
	}
	if _, err := monAdd(t, peon, "bad name", "127.0.0.1:2"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mon add with a bad name: %v, want InvalidArgument", err)
	}

	// Quorum math with 4 members: 3 alive can write, 2 alive cannot.
	li = waitQuorum(t, mons)
	kvSet(t, mons[li], "three-of-four", "ok")
	down := (li + 1) % 3
	mons[down].stop()
	ctx, cancel := rpcCtx(1500 * time.Millisecond)
	_, err = mons[li].c.KVSet(ctx, &minimonv1.KVSetRequest{Key: "two-of-four", Value: []byte("x")})
	cancel()
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("KVSet with 2 of 4 members alive: %v, want Unavailable", err)
	}
	mons[down] = start(t, cfgs[down], nil)
	li = waitQuorum(t, mons)
	kvSet(t, mons[li], "last", "v")

	// d starts with --join: already in the map, it writes its identity, syncs and is admitted.
	d := start(t, joinConfig("d", filepath.Join(t.TempDir(), "d"), dAddr, cfgs[0].Addr, cfgs[1].Addr), dLis)
	all := append(mons[:3:3], d)
	waitQuorum(t, all)
	if got := kvGet(t, d, "last"); got != "v" {
		t.Fatalf("joined d reads last = %q, want v", got)
	}
	if got := kvGet(t, d, "k00"); got != "0" {
		t.Fatalf("joined d reads k00 = %q, want 0", got)
	}
	if q := quorumOf(t, d); len(q) != 4 {
		t.Fatalf("quorum after the join = %v, want 4 members", q)
	}

	// mon remove d: d exits with ErrRemoved, the quorum is back to three.
	rr, err := monRemove(t, mons[li], "d")
	if err != nil {
		t.Fatalf("mon remove d: %v", err)
	}
	if !strings.HasPrefix(rr.GetMessage(), "removing mon.d") || rr.GetMonmap().GetEpoch() != 3 || len(rr.GetMonmap().GetMons()) != 3 {
		t.Fatalf("mon remove d = %v", rr)
	}
	waitRemoved(t, d)
	li = waitQuorum(t, mons)
	if q := quorumOf(t, mons[li]); len(q) != 3 {
		t.Fatalf("quorum after removing d = %v, want 3 members", q)
	}
	kvSet(t, mons[(li+1)%3], "after-remove", "ok")
	// Removing it again succeeds and says so.
	if rr, err := monRemove(t, mons[li], "d"); err != nil || rr.GetMessage() != "mon.d does not exist or has already been removed" {
		t.Fatalf("mon remove d again = %v, %v", rr, err)
	}

	// Two changes at once: one at a time, the second validated against the first's map.
	errs := make(chan error, 2)
	for i, name := range []string{"e", "f"} {
		go func() {
			ctx, cancel := rpcCtx(waitTimeout)
			defer cancel()
			_, err := mons[(li+i)%3].c.MonAdd(ctx, &minimonv1.MonAddRequest{Name: name, Addr: fmt.Sprintf("127.0.0.1:%d", 2+i)})
			errs <- err
		}()
	}
	added := 0
	for range 2 {
		err := <-errs
		switch {
		case err == nil:
			added++
		case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), errMemberChangeBusy):
		default:
			t.Fatalf("concurrent mon add: %v", err)
		}
	}
	li = waitQuorum(t, mons)
	ctx, cancel = rpcCtx(waitTimeout)
	dump, err := mons[li].c.MonDump(ctx, &minimonv1.MonDumpRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	// Epochs so far: 1 founding, 2 add d, 3 remove d; then one per add that succeeded.
	if mm := dump.GetMonmap(); added == 0 || len(mm.GetMons()) != 3+added || mm.GetEpoch() != uint64(3+added) {
		t.Fatalf("after two concurrent adds: %v", dump.GetMonmap())
	}
}

// Scenario 38 (remove the leader itself: ranks shift, a new leader is elected, the removed one
// exits), then a new monitor joins with --join, which adds it through the client library.
func TestMemberRemoveLeaderThenJoin(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	old := mons[li]
	kvSet(t, old, "k", "v1")
	r, err := monRemove(t, old, old.cfg.Name)
	if err != nil {
		t.Fatalf("mon remove of the leader %s: %v", old.cfg.Name, err)
	}
	if r.GetMonmap().GetEpoch() != 2 || len(r.GetMonmap().GetMons()) != 2 {
		t.Fatalf("mon remove %s = %v", old.cfg.Name, r)
	}
	waitRemoved(t, old)
	rest := []*testMon{mons[(li+1)%3], mons[(li+2)%3]}
	nl := waitQuorum(t, rest)
	kvSet(t, rest[(nl+1)%2], "k", "v2")
	// Ranks are 0 and 1 now, in the old order.
	for _, tm := range rest {
		ctx, cancel := rpcCtx(waitTimeout)
		st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if want := rankOf(r.GetMonmap(), tm.cfg.Name); st.GetRank() != want || want < 0 {
			t.Fatalf("%s has rank %d, want %d", tm.cfg.Name, st.GetRank(), want)
		}
	}

	// A new monitor joins: not in the map, it asks for `mon add` itself.
	eLis := listen(t)
	e := start(t, joinConfig("e", filepath.Join(t.TempDir(), "e"), eLis.Addr().String(), rest[0].cfg.Addr), eLis)
	waitQuorum(t, append(rest[:2:2], e))
	if got := kvGet(t, e, "k"); got != "v2" {
		t.Fatalf("joined e reads k = %q, want v2", got)
	}
	ctx, cancel := rpcCtx(waitTimeout)
	dump, err := e.c.MonDump(ctx, &minimonv1.MonDumpRequest{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if dump.GetMonmap().GetEpoch() != 3 || rankOf(dump.GetMonmap(), "e") != 2 {
		t.Fatalf("mon dump after e joined = %v", dump.GetMonmap())
	}

	// A monitor removed while it is down learns it at its next start from a member's Probe
	// answer (the members ignore its envelopes) and exits.
	down := rest[1]
	down.stop()
	if _, err := monRemove(t, e, down.cfg.Name); err != nil {
		t.Fatalf("mon remove %s while it is down: %v", down.cfg.Name, err)
	}
	waitQuorum(t, []*testMon{rest[0], e})
	waitRemoved(t, start(t, down.cfg, nil))
}

func TestMemberCommandsSingleMember(t *testing.T) {
	cfgs, lis := newCluster(t, 1)
	a := start(t, cfgs[0], lis[0])
	waitQuorum(t, []*testMon{a})
	if _, err := monRemove(t, a, "a"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mon remove of the last monitor: %v, want InvalidArgument", err)
	}
	if r, err := monRemove(t, a, "zz"); err != nil || !strings.Contains(r.GetMessage(), "does not exist") {
		t.Fatalf("mon remove of an absent monitor = %v, %v", r, err)
	}
	if _, err := monAdd(t, a, "b", "no-port"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mon add with a bad address: %v, want InvalidArgument", err)
	}

	// --join that reaches nobody gives up at its deadline with a clear error.
	dead := listen(t)
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	cfg := joinConfig("x", filepath.Join(t.TempDir(), "x"), "127.0.0.1:3", deadAddr)
	_, err := New(cfg, zaptest.NewLogger(t), WithJoinTimeout(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "--join") || !strings.Contains(err.Error(), "no monitor") {
		t.Fatalf("New with --join to a dead address = %v", err)
	}
	// --join with a name that another member holds at another address: EEXIST, nothing started.
	cfg = joinConfig("a", filepath.Join(t.TempDir(), "a2"), "127.0.0.1:4", a.cfg.Addr)
	_, err = New(cfg, zaptest.NewLogger(t), WithJoinTimeout(5*time.Second))
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("New with --join under a taken name = %v", err)
	}
}

// A member map change forwarded to a monitor that is a peon (the leader the forwarding peon saw
// lost the role, as in the re-election after a committed change) is answered at once with
// errForwardNotLeader, nothing proposed, so the forwarding peon re-forwards to the current
// leader; it must not wait for itself to become the leader (it used to, for maxWait, and the
// forwarding peon then failed the client's change with "no quorum").
func TestMemberForwardToPeonAnswersAtOnce(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	peon := mons[(li+1)%3]
	// Shorter than maxWait: a peon that waits for the leader role answers "no quorum" at this
	// deadline instead.
	ctx, cancel := rpcCtx(maxWait / 2)
	defer cancel()
	err := Forward(ctx, minimonv1.NewPeerClient(peon.cc), peon.m.fsid, mons[(li+2)%3].cfg.Name,
		minimonv1.Monitor_MonAdd_FullMethodName, &minimonv1.MonAddRequest{Name: "e", Addr: "127.0.0.1:2"},
		&minimonv1.MonAddReply{})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != errForwardNotLeader {
		t.Fatalf("mon add forwarded to the peon %s: %v, want Unavailable %q", peon.cfg.Name, err, errForwardNotLeader)
	}
	// Nothing was proposed: a change through the same peon (forwarded to the real leader) is
	// the first after the founding map.
	r, err := monAdd(t, peon, "e", "127.0.0.1:2")
	if err != nil || r.GetMonmap().GetEpoch() != 2 || len(r.GetMonmap().GetMons()) != 4 {
		t.Fatalf("mon add e through the peon = %v, %v", r, err)
	}
}
