package robustness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/monitor"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/test/e2e"
)

// Timing of the monitors: design.md 4a LAN defaults (lease 0.5 s, LT = AT = 0.6 s).
const (
	lease = 500 * time.Millisecond
	// recoverWait bounds waiting for a full quorum after a heal: many times the election and
	// lease timeouts, so a loaded 2-core machine does not flake; the measured figure is logged.
	recoverWait = 30 * time.Second
)

var (
	buildOnce sync.Once
	bins      e2e.Bins
	buildErr  error
	buildDir  string
)

func binaries(t *testing.T) e2e.Bins {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "minimon-robustness-"); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bins, buildErr = e2e.Build(ctx, buildDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

var ipSeq struct {
	sync.Mutex
	n int
}

// clusterIPs returns n loopback addresses 127.77.X.11.. with X derived from the pid and a
// counter, so concurrent test processes rarely share addresses (a clash shows as a failed
// listen, never as a silent cross-talk: ports are free-chosen per address too).
func clusterIPs(n int) []string {
	ipSeq.Lock()
	ipSeq.n++
	x := (os.Getpid()+ipSeq.n*37)%250 + 1
	ipSeq.Unlock()
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.77.%d.%d", x, 11+i)
	}
	return ips
}

// fcluster is a cluster of real monitords, each on its own loopback IP, with nft partitions.
type fcluster struct {
	t    *testing.T
	c    *e2e.Cluster
	ips  map[*e2e.Proc]string
	net  *netFaults
	cl   *client.Client // status queries and final checks
	dir  string
	mu   sync.Mutex
	stop map[*e2e.Proc]bool // SIGSTOPped now
}

func newFCluster(t *testing.T, n int) *fcluster {
	t.Helper()
	nf := newNetFaults(t) // skips here when nft cannot be used
	b := binaries(t)
	dir := t.TempDir()
	ips := clusterIPs(n)
	var ls []net.Listener
	addrs := make([]string, n)
	for i, ip := range ips {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			for _, l := range ls {
				_ = l.Close()
			}
			skipOrFail(t, "skipping: cannot listen on %s (needs 127/8 on lo): %v", ip, err)
		}
		ls = append(ls, l)
		addrs[i] = l.Addr().String()
	}
	for _, l := range ls {
		_ = l.Close()
	}
	members := make([]string, n)
	for i := range n {
		members[i] = e2e.Names[i] + "=" + addrs[i]
	}
	c := &e2e.Cluster{Bins: b, Dir: dir, Members: strings.Join(members, ",")}
	fc := &fcluster{t: t, c: c, net: nf, dir: dir, ips: map[*e2e.Proc]string{}, stop: map[*e2e.Proc]bool{}}
	for i := range n {
		p := c.NewProc(e2e.Names[i], addrs[i], c.Members)
		c.Procs = append(c.Procs, p)
		fc.ips[p] = ips[i]
	}
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	fc.cl = cl
	t.Cleanup(func() {
		_ = cl.Close()
		for _, p := range c.Procs {
			fc.Resume(p)
		}
		c.KillAll()
		if t.Failed() {
			for _, p := range c.Procs {
				t.Logf("log of mon.%s: %s", p.Name, p.LogPath)
				dumpTail(t, p, 80)
			}
		}
	})
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	return fc
}

func dumpTail(t *testing.T, p *e2e.Proc, n int) {
	lines := strings.Split(p.Log(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("--- tail of mon.%s ---\n%s", p.Name, strings.Join(lines, "\n"))
}

// Pause sends SIGSTOP.
func (fc *fcluster) Pause(p *e2e.Proc) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if pid := p.Pid(); pid > 0 && p.Running() {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		fc.stop[p] = true
	}
}

// Resume sends SIGCONT to a paused monitor.
func (fc *fcluster) Resume(p *e2e.Proc) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.stop[p] {
		if pid := p.Pid(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		delete(fc.stop, p)
	}
}

func (fc *fcluster) paused(p *e2e.Proc) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.stop[p]
}

// Isolate cuts p from every other monitor.
func (fc *fcluster) Isolate(p *e2e.Proc) error {
	var pairs [][2]string
	for _, q := range fc.c.Procs {
		if q != p {
			pairs = append(pairs, [2]string{fc.ips[p], fc.ips[q]})
		}
	}
	return fc.net.Cut(pairs...)
}

// CutLink cuts the link between a and b.
func (fc *fcluster) CutLink(a, b *e2e.Proc) error {
	return fc.net.Cut([2]string{fc.ips[a], fc.ips[b]})
}

// Split cuts every link between the two sides.
func (fc *fcluster) Split(side []*e2e.Proc) error {
	var pairs [][2]string
	for _, a := range side {
		for _, b := range fc.c.Procs {
			if !slices.Contains(side, b) {
				pairs = append(pairs, [2]string{fc.ips[a], fc.ips[b]})
			}
		}
	}
	return fc.net.Cut(pairs...)
}

func (fc *fcluster) status(ctx context.Context, p *e2e.Proc, timeout time.Duration) (*minimonv1.MonStatusReply, error) {
	return e2e.MonStatus(ctx, fc.cl, p, timeout)
}

// leader polls until a running, unpaused monitor says it is leader; the one with the highest
// election epoch wins.
func (fc *fcluster) leader(ctx context.Context) (*e2e.Proc, uint64, error) {
	for {
		var best *e2e.Proc
		var bestEpoch uint64
		for _, p := range fc.c.Procs {
			if !p.Running() || fc.paused(p) {
				continue
			}
			s, err := fc.status(ctx, p, 300*time.Millisecond)
			if err == nil && s.GetState() == "leader" && s.GetElectionEpoch() >= bestEpoch {
				best, bestEpoch = p, s.GetElectionEpoch()
			}
		}
		if best != nil {
			return best, bestEpoch, nil
		}
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitFullQuorum waits for every monitor in one quorum and returns the leader, its epoch and
// how long it took.
func (fc *fcluster) waitFullQuorum(ctx context.Context) (*e2e.Proc, uint64, time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, recoverWait)
	defer cancel()
	l, err := e2e.WaitQuorum(ctx, fc.cl, fc.c.Procs)
	if err != nil {
		return nil, 0, time.Since(start), err
	}
	s, err := fc.status(ctx, l, time.Second)
	if err != nil {
		return nil, 0, time.Since(start), err
	}
	return l, s.GetElectionEpoch(), time.Since(start), nil
}

// maxEpoch is the highest election epoch any reachable monitor reports.
func (fc *fcluster) maxEpoch(ctx context.Context) uint64 {
	var m uint64
	for _, p := range fc.c.Procs {
		if !p.Running() || fc.paused(p) {
			continue
		}
		if s, err := fc.status(ctx, p, 500*time.Millisecond); err == nil {
			m = max(m, s.GetElectionEpoch())
		}
	}
	return m
}

// waitSameLC waits until every monitor reports the same last_committed (a peon learns the
// last commit a moment after the leader).
func (fc *fcluster) waitSameLC(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, recoverWait)
	defer cancel()
	for {
		lcs := map[uint64]bool{}
		var desc []string
		for _, p := range fc.c.Procs {
			s, err := fc.status(ctx, p, 500*time.Millisecond)
			if err != nil {
				desc = append(desc, p.Name+": "+err.Error())
				lcs[0], lcs[1<<63] = true, true
				continue
			}
			lc := s.GetPaxos().GetLastCommitted()
			lcs[lc] = true
			desc = append(desc, fmt.Sprintf("%s: lc %d", p.Name, lc))
		}
		if len(lcs) == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("last_committed differs: %s", strings.Join(desc, "; "))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// storeState is what one stopped monitor's store holds.
type storeState struct {
	name    string
	fc, lc  uint64
	buckets map[string]map[string]string // replicated buckets
	get     func(v uint64) ([]byte, error)
	close   func()
}

// replicated are the buckets that every monitor of one last_committed holds identically.
var replicated = []string{kvstore.BucketKV, kvstore.BucketConfig, kvstore.BucketMonmap, kvstore.BucketDedup}

func openStore(p *e2e.Proc) (*storeState, error) {
	db, err := kvstore.Open(filepath.Join(p.DataDir, monitor.StoreFile), kvstore.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	st := &storeState{name: p.Name, buckets: map[string]map[string]string{}, close: func() { _ = db.Close() }}
	u64 := func(key string) (uint64, error) {
		b, err := db.Get(paxos.Bucket, []byte(key))
		if err != nil || b == nil {
			return 0, err
		}
		v, err := kvstore.ParseU64Key(b)
		return v, err
	}
	if st.fc, err = u64(paxos.KeyFirstCommitted); err == nil {
		st.lc, err = u64(paxos.KeyLastCommitted)
	}
	for _, b := range replicated {
		if err != nil {
			break
		}
		m := map[string]string{}
		err = db.ForEach(b, nil, func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		})
		st.buckets[b] = m
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	st.get = func(v uint64) ([]byte, error) { return db.Get(paxos.Bucket, kvstore.U64Key(v)) }
	return st, nil
}

// stopAndCompare stops every monitor with SIGTERM and compares their stores: the paxos
// versions of the common window byte for byte, the same last_committed, and the replicated
// buckets. It returns the kv bucket (identical on all).
func (fc *fcluster) stopAndCompare(ctx context.Context) (map[string]string, error) {
	for _, p := range fc.c.Procs {
		fc.Resume(p)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(fc.c.Procs))
	for i, p := range fc.c.Procs {
		wg.Go(func() { errs[i] = p.Term(15 * time.Second) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("stopping: %w", err)
	}
	var sts []*storeState
	defer func() {
		for _, s := range sts {
			s.close()
		}
	}()
	for _, p := range fc.c.Procs {
		s, err := openStore(p)
		if err != nil {
			return nil, fmt.Errorf("mon.%s store: %w", p.Name, err)
		}
		sts = append(sts, s)
	}
	lo, hi := uint64(0), uint64(1<<63)
	for _, s := range sts {
		lo, hi = max(lo, s.fc), min(hi, s.lc)
	}
	var desc []string
	for _, s := range sts {
		desc = append(desc, fmt.Sprintf("%s: fc %d lc %d", s.name, s.fc, s.lc))
		if s.lc != sts[0].lc {
			return nil, fmt.Errorf("last_committed differs after the final wait: %s", strings.Join(desc, "; "))
		}
	}
	if lo > hi {
		return nil, fmt.Errorf("no common paxos window: %s", strings.Join(desc, "; "))
	}
	for v := lo; v <= hi; v++ {
		ref, err := sts[0].get(v)
		if err != nil || ref == nil {
			return nil, fmt.Errorf("mon.%s lacks paxos version %d (%v)", sts[0].name, v, err)
		}
		for _, s := range sts[1:] {
			b, err := s.get(v)
			if err != nil || !bytes.Equal(b, ref) {
				return nil, fmt.Errorf("paxos version %d differs between mon.%s and mon.%s (%d vs %d bytes, %v)",
					v, sts[0].name, s.name, len(ref), len(b), err)
			}
		}
	}
	for _, b := range replicated {
		for _, s := range sts[1:] {
			if d := diffMaps(sts[0].buckets[b], s.buckets[b]); d != "" {
				return nil, fmt.Errorf("bucket %s differs between mon.%s and mon.%s at lc %d: %s", b, sts[0].name, s.name, s.lc, d)
			}
		}
	}
	fc.t.Logf("stores agree: %s; paxos versions %d..%d compared byte for byte", strings.Join(desc, "; "), lo, hi)
	return sts[0].buckets[kvstore.BucketKV], nil
}

func diffMaps(a, b map[string]string) string {
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return fmt.Sprintf("key %q: %d bytes vs %d bytes (present %v)", k, len(v), len(w), ok)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return fmt.Sprintf("key %q only in the second", k)
		}
	}
	return ""
}

// electionsWon counts completed elections: the "election: won" lines in every monitor's log.
// An election can bump the epoch by more than 2 (a competing proposal during an admission
// election), so epochs alone overstate the count; both figures are logged.
func (fc *fcluster) electionsWon() int {
	n := 0
	for _, p := range fc.c.Procs {
		n += strings.Count(p.Log(), "election: won")
	}
	return n
}
