package monitor

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func configSet(t *testing.T, tm *testMon, who, name, value string) *minimonv1.ConfigWriteReply {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	r, err := tm.c.ConfigSet(ctx, &minimonv1.ConfigSetRequest{Who: who, Name: name, Value: value})
	if err != nil {
		t.Fatalf("ConfigSet(%s %s) on %s: %v", who, name, tm.cfg.Name, err)
	}
	return r
}

// configGet returns the value of name for who on host/class as tm sees it, "" with codes.NotFound.
func configGet(t *testing.T, tm *testMon, who, name, host, class string) (string, codes.Code) {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	r, err := tm.c.ConfigGet(ctx, &minimonv1.ConfigGetRequest{Who: who, Name: name, Host: host, DeviceClass: class})
	if err != nil {
		return "", status.Code(err)
	}
	if len(r.GetEntries()) != 1 {
		t.Fatalf("ConfigGet(%s %s) on %s: %d entries", who, name, tm.cfg.Name, len(r.GetEntries()))
	}
	return r.GetEntries()[0].GetValue(), codes.OK
}

func paxosLC(t *testing.T, tm *testMon) uint64 {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetPaxos().GetLastCommitted()
}

func TestClusterConfig(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader, peon := mons[li], mons[(li+1)%3]

	// Writes through a peon are forwarded; the reply carries the config version.
	for i, w := range []struct{ who, value string }{
		{"global", "g"}, {"osd", "osd"}, {"osd/host:a", "osd-a"}, {"osd/host:a/class:ssd", "osd-a-ssd"}, {"osd.3", "osd3"},
	} {
		if r := configSet(t, peon, w.who, "debug_ms", w.value); r.GetVersion() != uint64(i+1) {
			t.Fatalf("set %s: version %d, want %d (message %q)", w.who, r.GetVersion(), i+1, r.GetMessage())
		}
	}
	// Every monitor answers with the same resolution (its own store, under its lease).
	for _, tm := range mons {
		for _, q := range []struct{ who, host, class, want string }{
			{"mon.a", "", "", "g"},
			{"osd.1", "", "", "osd"},
			{"osd.1", "a", "", "osd-a"},
			{"osd.1", "b", "ssd", "osd"},
			{"osd.1", "a", "ssd", "osd-a-ssd"},
			{"osd.3", "a", "ssd", "osd3"},
		} {
			if got, code := configGet(t, tm, q.who, "debug_ms", q.host, q.class); got != q.want {
				t.Errorf("mon.%s: get %s debug_ms host %q class %q = %q (%v), want %q",
					tm.cfg.Name, q.who, q.host, q.class, got, code, q.want)
			}
		}
		if _, code := configGet(t, tm, "osd.1", "unset_opt", "", ""); code != codes.NotFound {
			t.Errorf("mon.%s: get of an unset option: %v, want NotFound", tm.cfg.Name, code)
		}
	}

	// Setting the value already set: no Paxos round, the current version, a reply at once.
	lc := paxosLC(t, leader)
	for _, tm := range []*testMon{leader, peon} {
		if r := configSet(t, tm, "osd.3", "debug_ms", "osd3"); r.GetVersion() != 5 {
			t.Errorf("no-op set on mon.%s: version %d, want 5", tm.cfg.Name, r.GetVersion())
		}
	}
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	rm, err := peon.c.ConfigRm(ctx, &minimonv1.ConfigRmRequest{Who: "osd.9", Name: "debug_ms"})
	if err != nil || rm.GetVersion() != 5 {
		t.Errorf("rm of an absent entry: %v, %v; want success at version 5", rm, err)
	}
	if got := paxosLC(t, leader); got != lc {
		t.Errorf("no-op writes moved paxos last_committed from %d to %d", lc, got)
	}

	// Invalid input: InvalidArgument, nothing proposed.
	if _, err := peon.c.ConfigSet(ctx, &minimonv1.ConfigSetRequest{Who: "foo", Name: "x", Value: "1"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("set with WHO foo: %v, want InvalidArgument", err)
	}
	if _, err := leader.c.ConfigSet(ctx, &minimonv1.ConfigSetRequest{Who: "osd", Name: "Bad-Name", Value: "1"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("set with a bad name: %v, want InvalidArgument", err)
	}
	if got := paxosLC(t, leader); got != lc {
		t.Errorf("invalid writes moved paxos last_committed from %d to %d", lc, got)
	}

	// Reset to version 2 (global and osd only), through a peon; read back everywhere.
	r, err := peon.c.ConfigReset(ctx, &minimonv1.ConfigResetRequest{Version: 2})
	if err != nil || r.GetVersion() != 6 {
		t.Fatalf("reset 2: %v, %v; want version 6", r, err)
	}
	for _, tm := range mons {
		d, err := tm.c.ConfigDump(ctx, &minimonv1.ConfigDumpRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range d.GetEntries() {
			got = append(got, e.GetSection()+"/"+e.GetMask()+"/"+e.GetName()+"="+e.GetValue())
		}
		if len(got) != 2 || got[0] != "global//debug_ms=g" || got[1] != "osd//debug_ms=osd" {
			t.Errorf("mon.%s dump after reset: %v", tm.cfg.Name, got)
		}
		lg, err := tm.c.ConfigLog(ctx, &minimonv1.ConfigLogRequest{N: 2})
		if err != nil {
			t.Fatal(err)
		}
		if chs := lg.GetChanges(); len(chs) != 2 || chs[0].GetVersion() != 6 || chs[1].GetVersion() != 5 {
			t.Errorf("mon.%s log 2: %v", tm.cfg.Name, chs)
		}
	}
	if _, err := leader.c.ConfigReset(ctx, &minimonv1.ConfigResetRequest{Version: 99}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("reset to the future: %v, want InvalidArgument", err)
	}
}

// --mon-config-history-keep bounds the history: a reset to a version trimmed away answers
// NotFound, one still kept works, and `config log` holds exactly the kept changes.
func TestConfigHistoryKeepOption(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	for i := range cfgs {
		cfgs[i].MonConfigHistoryKeep = 3
	}
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader := mons[li]
	for i := range 5 {
		configSet(t, leader, "global", "debug_ms", fmt.Sprint(i+1))
	}
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	if _, err := leader.c.ConfigReset(ctx, &minimonv1.ConfigResetRequest{Version: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("reset to trimmed version 1: %v, want NotFound", err)
	}
	lg, err := leader.c.ConfigLog(ctx, &minimonv1.ConfigLogRequest{})
	if err != nil || len(lg.GetChanges()) != 3 {
		t.Fatalf("config log with keep 3: %v, %v", lg, err)
	}
	if _, err := leader.c.ConfigReset(ctx, &minimonv1.ConfigResetRequest{Version: 4}); err != nil {
		t.Fatalf("reset to kept version 4: %v", err)
	}
}
