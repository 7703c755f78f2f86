package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/minimon/minimon/client"
)

// bins are monitord and monctl built once for the package by TestMain.
var bins Bins

// deadline bounds every wait of a test; it only keeps a broken cluster from hanging the run,
// it never judges speed.
const deadline = 30 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "minimon-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err = Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testCluster is a Cluster bound to a test: children killed and logs printed on failure.
type testCluster struct {
	*Cluster
	t  *testing.T
	cl *client.Client // over every member
}

// newCluster prepares a cluster of o.N monitors (not started). Cleanup kills every child
// (extra procs registered with track too) and prints their logs when the test failed.
func newCluster(t *testing.T, o Options) *testCluster {
	t.Helper()
	c, err := NewCluster(bins, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{Cluster: c, t: t, cl: cl}
	t.Cleanup(func() {
		_ = cl.Close()
		c.KillAll()
		if t.Failed() {
			for _, p := range c.Procs {
				tc.dumpLog(p)
			}
		}
	})
	return tc
}

// track registers a proc outside c.Procs for cleanup and log printing.
func (tc *testCluster) track(p *Proc) {
	tc.t.Cleanup(func() {
		_ = p.Kill()
		if tc.t.Failed() {
			tc.dumpLog(p)
		}
	})
}

// dumpLog prints the tail of a monitor's log (the whole log of a short test is thousands of
// lines of lease renewals at debug level; info level keeps it small, but bound it anyway).
func (tc *testCluster) dumpLog(p *Proc) {
	const maxLines = 300
	lines := strings.Split(p.Log(), "\n")
	if len(lines) > maxLines {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-maxLines)}, lines[len(lines)-maxLines:]...)
	}
	tc.t.Logf("---- log of mon.%s (%s) ----\n%s", p.Name, p.LogPath, strings.Join(lines, "\n"))
}

// start starts every member and waits for the full quorum; it returns the leader.
func (tc *testCluster) start() *Proc {
	tc.t.Helper()
	if err := tc.StartAll(); err != nil {
		tc.t.Fatal(err)
	}
	return tc.waitQuorum(tc.Procs...)
}

// waitQuorum waits until procs are all in one quorum (leader or peon); it returns the leader.
func (tc *testCluster) waitQuorum(procs ...*Proc) *Proc {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	leader, err := WaitQuorum(ctx, tc.cl, procs)
	if err != nil {
		tc.t.Fatal(err)
	}
	return leader
}

// ctx is a context bounded by the hang guard.
func (tc *testCluster) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	tc.t.Cleanup(cancel)
	return ctx
}

// restart starts a stopped member again on its data dir.
func (tc *testCluster) restart(p *Proc) {
	tc.t.Helper()
	if err := p.Start(); err != nil {
		tc.t.Fatal(err)
	}
}

// kill sends SIGKILL to p and waits until it is gone.
func (tc *testCluster) kill(p *Proc) {
	tc.t.Helper()
	if err := p.Kill(); err != nil {
		tc.t.Fatal(err)
	}
}

// monctl runs monctl against every member (-m) with extra global flags first.
func (tc *testCluster) monctl(args ...string) (code int, stdout, stderr string) {
	tc.t.Helper()
	full := append([]string{"-m", tc.MonHost()}, args...)
	code, stdout, stderr, err := Monctl(tc.ctx(), bins, full...)
	if err != nil {
		tc.t.Fatalf("monctl %q: %v", full, err)
	}
	return code, stdout, stderr
}

// others returns the members other than p.
func (tc *testCluster) others(p *Proc) []*Proc {
	var out []*Proc
	for _, q := range tc.Procs {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// addrsOf returns the addresses of procs.
func addrsOf(procs ...*Proc) []string {
	out := make([]string, len(procs))
	for i, p := range procs {
		out[i] = p.Addr
	}
	return out
}

// mustGet reads key through cl and fails the test unless it holds want.
func mustGet(t *testing.T, ctx context.Context, cl *client.Client, key, want string) {
	t.Helper()
	got, err := cl.KVGet(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if string(got) != want {
		t.Fatalf("get %s = %q, want %q", key, got, want)
	}
}

// isNoQuorum: the error a client gives when no monitor in a quorum answered in time.
func isNoQuorum(err error) bool {
	return errors.Is(err, client.ErrNoQuorum) || errors.Is(err, client.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded)
}
