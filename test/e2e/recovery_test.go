package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// monitordTool runs an offline subcommand of monitord and returns its exit code and output.
func monitordTool(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bins.Monitord, args...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("monitord %q: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// soloProc is a monitord started with only --name, --data-dir and --addr (plus extra flags):
// everything else comes from its store. It is tracked for cleanup and logs.
func (tc *testCluster) soloProc(name, addr, dataDir string, extra ...string) *Proc {
	args := append([]string{"--name", name, "--data-dir", dataDir, "--addr", addr,
		"--log-format", "console", "--log-level", "info"}, extra...)
	p := &Proc{Name: name, Addr: addr, DataDir: dataDir,
		LogPath: filepath.Join(tc.Dir, name+"-recovered.log"), Args: args, bin: tc.Bins.Monitord}
	tc.track(p)
	return p
}

// TestLostQuorumRecovery is the runbook for a majority lost for good (spec 8 item 8): of three
// monitors two die with kill -9 and never come back. The survivor, stopped, is checked, its
// member map extracted, then cut down to itself with inject-monmap --keep; started alone it is
// a quorum of one holding every acknowledged write and accepting new ones. Two new monitors
// with fresh stores then join it (--join), back to three.
func TestLostQuorumRecovery(t *testing.T) {
	tc := newCluster(t, Options{})
	tc.start()
	ctx := tc.ctx()
	var acks ackLog
	writeKeys(t, ctx, tc.cl, &acks, "before", 20)

	a, b, c := tc.Proc("a"), tc.Proc("b"), tc.Proc("c")
	tc.kill(b)
	tc.kill(c)

	// The tools refuse the store of a running monitor.
	code, _, errOut := monitordTool(t, ctx, "check", "--data-dir", a.DataDir)
	if code == 0 || !strings.Contains(errOut, "store is in use by a running monitord") {
		t.Fatalf("check of a running monitor's store: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = monitordTool(t, ctx, "inject-monmap", "--data-dir", a.DataDir, "--keep", "a")
	if code == 0 || !strings.Contains(errOut, "store is in use by a running monitord") {
		t.Fatalf("inject-monmap into a running monitor's store: exit %d, stderr %q", code, errOut)
	}
	tc.kill(a)

	code, out, errOut := monitordTool(t, ctx, "check", "--data-dir", a.DataDir)
	if code != 0 || !strings.HasPrefix(out, "ok: fsid ") || !strings.Contains(out, ", name a, paxos ") ||
		!strings.HasSuffix(out, "monmap epoch 1 (a,b,c)\n") {
		t.Fatalf("check of the stopped survivor: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	saved := filepath.Join(tc.Dir, "monmap.json")
	if code, out, errOut := monitordTool(t, ctx, "extract-monmap", "--data-dir", a.DataDir, "--out", saved); code != 0 {
		t.Fatalf("extract-monmap: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	raw, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	var mm struct {
		Epoch string `json:"epoch"` // protojson writes uint64 as a string
		Fsid  string `json:"fsid"`
		Mons  []struct {
			Name, Addr string
		} `json:"mons"`
	}
	if err := json.Unmarshal(raw, &mm); err != nil {
		t.Fatalf("extracted monmap %q: %v", raw, err)
	}
	if mm.Epoch != "1" || mm.Fsid == "" || len(mm.Mons) != 3 || mm.Mons[0].Name != "a" || mm.Mons[0].Addr != a.Addr {
		t.Fatalf("extracted monmap: %s", raw)
	}

	code, out, errOut = monitordTool(t, ctx, "inject-monmap", "--data-dir", a.DataDir, "--keep", "a", "--epoch-jump", "10")
	if want := fmt.Sprintf("injected monmap epoch 11 (a=%s)\n", a.Addr); code != 0 || out != want {
		t.Fatalf("inject-monmap --keep a: exit %d, stdout %q (want %q), stderr %q", code, out, want, errOut)
	}
	code, out, errOut = monitordTool(t, ctx, "check", "--data-dir", a.DataDir)
	if code != 0 || !strings.HasSuffix(out, "monmap epoch 11 (a)\n") {
		t.Fatalf("check after inject: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// The survivor alone, from its store: a quorum of one.
	solo := tc.soloProc("a", a.Addr, a.DataDir)
	if err := solo.Start(); err != nil {
		t.Fatal(err)
	}
	cl, err := tc.Client(solo.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tc.waitQuorum(solo)
	s, err := MonStatus(ctx, cl, solo, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if s.GetState() != "leader" || len(s.GetQuorum()) != 1 || s.GetMonmap().GetEpoch() != 11 {
		t.Fatalf("the recovered survivor: state %s, quorum %v, monmap epoch %d", s.GetState(), s.GetQuorum(), s.GetMonmap().GetEpoch())
	}
	checkAcked(t, ctx, cl, &acks)
	writeKeys(t, ctx, cl, &acks, "alone", 10)

	// Grow back to three with new monitors (new names, fresh data dirs) joining the survivor.
	addrs, err := FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	d := tc.soloProc("d", addrs[0], filepath.Join(tc.Dir, "d"), "--join", solo.Addr)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	tc.waitQuorum(solo, d)
	e := tc.soloProc("e", addrs[1], filepath.Join(tc.Dir, "e"), "--join", solo.Addr+","+d.Addr)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	tc.waitQuorum(solo, d, e)

	all, err := tc.Client(solo.Addr, d.Addr, e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	writeKeys(t, ctx, all, &acks, "grown", 10)
	st, err := all.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := slices.Sorted(slices.Values(st.GetQuorumNames())); !slices.Equal(names, []string{"a", "d", "e"}) ||
		st.GetMonmapEpoch() != 13 {
		t.Fatalf("status after growing back: quorum %v, monmap epoch %d", st.GetQuorumNames(), st.GetMonmapEpoch())
	}
	// Every acknowledged write, read from each new monitor on its own.
	for _, p := range []*Proc{d, e} {
		one, err := tc.Client(p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		checkAcked(t, ctx, one, &acks)
		_ = one.Close()
	}
}
