// Package e2e runs real monitord processes on loopback ports and drives them through the
// client library and monctl. The harness lives outside _test.go files so the figures program
// (test/e2e/measure) shares it with the tests.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
)

// Bins are the two binaries under test.
type Bins struct {
	Monitord, Monctl string
}

// Build compiles monitord and monctl into dir the way `make build` does (static). It runs from
// the module, wherever the caller's working directory is inside it.
func Build(ctx context.Context, dir string) (Bins, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+string(filepath.Separator),
		"github.com/minimon/minimon/cmd/monitord", "github.com/minimon/minimon/cmd/monctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Bins{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	return Bins{Monitord: filepath.Join(dir, "monitord"), Monctl: filepath.Join(dir, "monctl")}, nil
}

// FreeAddrs reserves n loopback ports at once (all listeners open together, so they differ)
// and releases them for the children to bind. Another process could take one in between; on
// a test machine that is rare enough, and the start would fail loudly, not silently.
func FreeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// Proc is one monitord process; Start may be called again after it exited (same data dir).
type Proc struct {
	Name, Addr, DataDir, LogPath string
	Args                         []string // every argument of monitord, fixed at creation
	Env                          []string // extra KEY=VALUE environment of the next starts
	bin                          string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has been reaped
	err  error         // its exit error
}

// Start starts the process, appending its stdout and stderr to LogPath.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("mon.%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== e2e: starting mon.%s at %s: %s\n", p.Name, time.Now().Format(time.RFC3339Nano),
		strings.Join(p.Args, " "))
	cmd := exec.Command(p.bin, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(cleanEnv(), p.Env...)
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return err
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process has been started and not yet reaped.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// Pid is the current process id (0 before the first start).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL and waits until the process is reaped (no-op when not running).
func (p *Proc) Kill() error { return p.signalWait(syscall.SIGKILL, 10*time.Second) }

// Term sends SIGTERM and waits up to timeout for a clean exit; a process still there then is
// killed and reported as an error.
func (p *Proc) Term(timeout time.Duration) error {
	if err := p.signalWait(syscall.SIGTERM, timeout); err != nil {
		_ = p.Kill()
		return err
	}
	return nil
}

// ExitErr is the exit error of the last process that ended (nil for status 0).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *Proc) signalWait(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("mon.%s (pid %d) still running %v after %v", p.Name, cmd.Process.Pid, timeout, sig)
	}
}

// Log returns the captured output of every start so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.LogPath, err)
	}
	return string(b)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cleanEnv drops MINIMON_ variables so the caller's environment cannot change a monitor.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MINIMON_") && !strings.HasPrefix(kv, "MONCTL_") {
			env = append(env, kv)
		}
	}
	return env
}

// Cluster is N monitors founded together with one --initial-members list.
type Cluster struct {
	Bins    Bins
	Dir     string
	Procs   []*Proc
	Members string // the --initial-members value
}

// Options shape a new cluster.
type Options struct {
	N     int      // members (default 3)
	Extra []string // extra monitord flags for every member, e.g. --paxos-min 5
}

// Names of the monitors by rank order of creation.
var Names = []string{"a", "b", "c", "d", "e"}

// NewCluster prepares (does not start) a cluster under dir.
func NewCluster(bins Bins, dir string, o Options) (*Cluster, error) {
	if o.N == 0 {
		o.N = 3
	}
	if o.N > len(Names) {
		return nil, fmt.Errorf("at most %d monitors", len(Names))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addrs, err := FreeAddrs(o.N)
	if err != nil {
		return nil, err
	}
	members := make([]string, o.N)
	for i := range o.N {
		members[i] = Names[i] + "=" + addrs[i]
	}
	c := &Cluster{Bins: bins, Dir: dir, Members: strings.Join(members, ",")}
	for i := range o.N {
		c.Procs = append(c.Procs, c.NewProc(Names[i], addrs[i], c.Members, o.Extra...))
	}
	return c, nil
}

// NewProc prepares one monitord (not part of c.Procs) with its data dir and log under c.Dir.
func (c *Cluster) NewProc(name, addr, members string, extra ...string) *Proc {
	dataDir := filepath.Join(c.Dir, name)
	args := []string{"--name", name, "--data-dir", dataDir, "--addr", addr,
		"--initial-members", members, "--log-format", "console", "--log-level", "info",
		// The host's free space must not decide the tests' health: no MON_DISK_LOW/CRIT unless
		// a test asks for it (Extra flags come later and win).
		"--mon-data-avail-warn", "0", "--mon-data-avail-crit", "0"}
	return &Proc{
		Name: name, Addr: addr, DataDir: dataDir, LogPath: filepath.Join(c.Dir, name+".log"),
		Args: append(args, extra...), bin: c.Bins.Monitord,
	}
}

// Addrs are the client addresses of every member.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Procs))
	for i, p := range c.Procs {
		out[i] = p.Addr
	}
	return out
}

// MonHost is the monctl -m value naming every member.
func (c *Cluster) MonHost() string { return strings.Join(c.Addrs(), ",") }

// Proc returns the member named name (nil if none).
func (c *Cluster) Proc(name string) *Proc {
	for _, p := range c.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// StartAll starts every member that is not running.
func (c *Cluster) StartAll() error {
	for _, p := range c.Procs {
		if p.Running() {
			continue
		}
		if err := p.Start(); err != nil {
			return err
		}
	}
	return nil
}

// KillAll sends SIGKILL to every member and reaps them; used for cleanup too.
func (c *Cluster) KillAll() {
	var wg sync.WaitGroup
	for _, p := range c.Procs {
		wg.Go(func() { _ = p.Kill() })
	}
	wg.Wait()
}

// Client returns a client over the given endpoints (every member when none given).
func (c *Cluster) Client(endpoints ...string) (*client.Client, error) {
	if len(endpoints) == 0 {
		endpoints = c.Addrs()
	}
	return client.New(client.Config{Endpoints: endpoints, DialTimeout: time.Second,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
}

// InQuorum reports whether a MonStatus says the monitor is leader or peon.
func InQuorum(s *minimonv1.MonStatusReply) bool {
	return s.GetState() == "leader" || s.GetState() == "peon"
}

// MonStatus asks the one monitor p about itself, bounded by timeout per attempt.
func MonStatus(ctx context.Context, cl *client.Client, p *Proc, timeout time.Duration) (*minimonv1.MonStatusReply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cl.MonStatus(ctx, p.Addr)
}

// WaitQuorum polls MonStatus of every proc in procs until all are leader or peon in the same
// election epoch with one leader and a quorum containing each of them; it returns the leader.
func WaitQuorum(ctx context.Context, cl *client.Client, procs []*Proc) (*Proc, error) {
	var last []string
	for {
		var leader *Proc
		epochs := map[uint64]bool{}
		ok := true
		last = last[:0]
		for _, p := range procs {
			s, err := MonStatus(ctx, cl, p, 500*time.Millisecond)
			if err != nil {
				ok = false
				last = append(last, fmt.Sprintf("%s: %v", p.Name, err))
				continue
			}
			last = append(last, fmt.Sprintf("%s: %s epoch %d quorum %v", p.Name, s.GetState(), s.GetElectionEpoch(), s.GetQuorum()))
			if !InQuorum(s) || !slices.Contains(s.GetQuorum(), s.GetRank()) {
				ok = false
				continue
			}
			epochs[s.GetElectionEpoch()] = true
			if s.GetState() == "leader" {
				if leader != nil {
					ok = false
				}
				leader = p
			}
		}
		if ok && leader != nil && len(epochs) == 1 {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no quorum of %d: %s: %w", len(procs), strings.Join(last, "; "), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Monctl runs monctl with args (global flags included by the caller) and returns its exit
// code, stdout and stderr. A monctl still running at the context's end is killed (code -1).
func Monctl(ctx context.Context, bins Bins, args ...string) (code int, stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bins.Monctl, args...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	runErr := cmd.Run()
	var ee *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &ee):
		code = ee.ExitCode()
	default:
		return -1, out.String(), errb.String(), runErr
	}
	return code, out.String(), errb.String(), nil
}
