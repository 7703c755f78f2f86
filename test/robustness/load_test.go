package robustness

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/minimon/minimon/client"
	"github.com/minimon/minimon/internal/sim"
	"github.com/minimon/minimon/test/e2e"
)

// opTimeout bounds one client operation; a write cut by it is recorded as unknown.
const opTimeout = 2500 * time.Millisecond

type ackedWrite struct {
	value   string
	version uint64
}

// recorder is the shared client history: one base time for every client (monotonic clock).
type recorder struct {
	base time.Time

	mu                                      sync.Mutex
	ops                                     []porcupine.Operation
	nextID                                  int
	acked                                   map[string][]ackedWrite
	unknown                                 map[string]map[string]bool
	ackTimes                                []time.Duration // response times of acknowledged writes
	putsOK, putsUnknown, getsOK, getsFailed int
}

func newRecorder() *recorder {
	return &recorder{base: time.Now(), acked: map[string][]ackedWrite{}, unknown: map[string]map[string]bool{}}
}

func (r *recorder) now() time.Duration { return time.Since(r.base) }

func (r *recorder) newID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextID++
	return r.nextID
}

// put runs one write and records it; it returns the porcupine client id to use next (a new one
// after an unknown outcome, whose operation never returns).
func (r *recorder) put(ctx context.Context, c *client.Client, id int, key, value string) int {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	call := r.now()
	rep, err := c.KVSet(cctx, key, []byte(value))
	ret := r.now()
	cancel()
	in := sim.OpInput{Kind: sim.OpPut, Key: key, Value: value}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		// Any failure of a write that may have been sent is an unknown outcome, not a failure.
		r.ops = append(r.ops, porcupine.Operation{ClientId: id, Input: in, Call: int64(call),
			Output: sim.OpOutput{Unknown: true}, Return: math.MaxInt64})
		if r.unknown[key] == nil {
			r.unknown[key] = map[string]bool{}
		}
		r.unknown[key][value] = true
		r.putsUnknown++
		r.nextID++
		return r.nextID
	}
	r.ops = append(r.ops, porcupine.Operation{ClientId: id, Input: in, Call: int64(call),
		Output: sim.OpOutput{Version: rep.GetVersion()}, Return: int64(ret)})
	r.acked[key] = append(r.acked[key], ackedWrite{value, rep.GetVersion()})
	r.ackTimes = append(r.ackTimes, ret)
	r.putsOK++
	return id
}

// get runs one read; a failed read is left out of the history (it has no effect).
func (r *recorder) get(ctx context.Context, c *client.Client, id int, key string) error {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	call := r.now()
	v, err := c.KVGet(cctx, key)
	ret := r.now()
	cancel()
	if errors.Is(err, client.ErrNotFound) {
		v, err = nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.getsFailed++
		return err
	}
	r.ops = append(r.ops, porcupine.Operation{ClientId: id, Input: sim.OpInput{Kind: sim.OpGet, Key: key},
		Call: int64(call), Output: sim.OpOutput{Value: string(v), NoVersion: true}, Return: int64(ret)})
	r.getsOK++
	return nil
}

// longestWriteGap is the longest time without an acknowledged write inside [from, to].
func (r *recorder) longestWriteGap(from, to time.Duration) time.Duration {
	r.mu.Lock()
	ts := slices.Clone(r.ackTimes)
	r.mu.Unlock()
	slices.Sort(ts)
	prev, gap := from, time.Duration(0)
	for _, t := range ts {
		if t < from || t > to {
			continue
		}
		gap = max(gap, t-prev)
		prev = t
	}
	return max(gap, to-prev)
}

func (r *recorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d ops recorded: %d writes acknowledged, %d writes unknown, %d reads, %d reads failed (left out)",
		len(r.ops), r.putsOK, r.putsUnknown, r.getsOK, r.getsFailed)
}

var keys = []string{"hot0", "hot1", "hot2"}

// load runs nClients concurrent clients until ctx ends: random reads and writes of unique
// values on the hot keys, each through either every monitor (hunting) or one monitor only
// (pinned, so peons serve too). Choices come from the seed.
type load struct {
	rec *recorder
	wg  sync.WaitGroup
	cls []*client.Client
}

func startLoad(ctx context.Context, t *testing.T, fc *fcluster, rec *recorder, nClients int, seed uint64) *load {
	l := &load{rec: rec}
	addrs := fc.c.Addrs()
	newClient := func(eps ...string) *client.Client {
		c, err := client.New(client.Config{Endpoints: eps, DialTimeout: 500 * time.Millisecond,
			BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		l.cls = append(l.cls, c)
		return c
	}
	for i := range nClients {
		rot := append(slices.Clone(addrs[i%len(addrs):]), addrs[:i%len(addrs)]...)
		all := newClient(rot...)
		pinned := make([]*client.Client, len(addrs))
		for j, a := range addrs {
			pinned[j] = newClient(a)
		}
		rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
		l.wg.Go(func() {
			id := rec.newID()
			for seq := 0; ctx.Err() == nil; seq++ {
				c := all
				if rng.IntN(3) == 0 {
					c = pinned[rng.IntN(len(pinned))]
				}
				key := keys[rng.IntN(len(keys))]
				if rng.IntN(2) == 0 {
					id = rec.put(ctx, c, id, key, fmt.Sprintf("c%d-%d", i, seq))
				} else {
					_ = rec.get(ctx, c, id, key)
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(5+rng.IntN(20)) * time.Millisecond):
				}
			}
		})
	}
	return l
}

func (l *load) wait() {
	l.wg.Wait()
	for _, c := range l.cls {
		_ = c.Close()
	}
}

// finalChecks runs after the last heal with the load still on: full quorum, a write accepted,
// then the load stops, every monitor is read, the stores are compared, acknowledged writes are
// looked up and the history is checked for linearizability.
func finalChecks(ctx context.Context, t *testing.T, fc *fcluster, rec *recorder, stopLoad func(), seed uint64) {
	t.Helper()
	for _, p := range fc.c.Procs {
		fc.Resume(p)
		if !p.Running() {
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := fc.net.Heal(); err != nil {
		t.Fatal(err)
	}
	l, epoch, took, err := fc.waitFullQuorum(ctx)
	if err != nil {
		stopLoad()
		t.Fatalf("cluster did not recover after the last heal within %v: %v (seed %d)", recoverWait, err, seed)
	}
	t.Logf("recovery after the last heal: full quorum in %v (leader mon.%s, epoch %d)", took.Round(time.Millisecond), l.Name, epoch)
	id := rec.newID()
	wstart := time.Now()
	var wrote bool
	for time.Since(wstart) < recoverWait && !wrote {
		rec.mu.Lock()
		before := rec.putsOK
		rec.mu.Unlock()
		rec.put(ctx, fc.cl, id, keys[0], fmt.Sprintf("final-%d", time.Since(wstart)))
		rec.mu.Lock()
		wrote = rec.putsOK > before
		rec.mu.Unlock()
		id = rec.newID()
	}
	stopLoad()
	if !wrote {
		t.Fatalf("no write accepted within %v after the last heal (seed %d)", recoverWait, seed)
	}
	t.Logf("recovery: first write after the quorum accepted in %v", time.Since(wstart).Round(time.Millisecond))

	// A read of every key on every monitor, in the history too.
	for _, p := range fc.c.Procs {
		c, err := client.New(client.Config{Endpoints: []string{p.Addr}, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rid := rec.newID()
		for _, k := range keys {
			if err := rec.get(ctx, c, rid, k); err != nil {
				t.Errorf("final read of %s on mon.%s: %v", k, p.Name, err)
			}
		}
		_ = c.Close()
	}
	if err := fc.waitSameLC(ctx); err != nil {
		t.Errorf("%v (seed %d)", err, seed)
	}
	kv, err := fc.stopAndCompare(ctx)
	if err != nil {
		t.Errorf("store comparison: %v (seed %d)", err, seed)
	} else {
		checkAcked(t, rec, kv, seed)
	}
	checkLinearizable(t, rec, seed)
}

// checkAcked: the final value of each key is its acknowledged write of the highest version,
// or a write that may have come later (acknowledged at a version at least as high, or unknown).
func checkAcked(t *testing.T, rec *recorder, kv map[string]string, seed uint64) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, k := range keys {
		final := kv[k]
		var top ackedWrite
		for _, w := range rec.acked[k] {
			if w.version > top.version {
				top = w
			}
		}
		if top.value == "" || final == top.value || rec.unknown[k][final] {
			continue
		}
		ok := false
		for _, w := range rec.acked[k] {
			if w.value == final && w.version >= top.version {
				ok = true
			}
		}
		if !ok {
			t.Errorf("acknowledged write lost: key %s ends as %q, but %q was acknowledged at version %d (seed %d)",
				k, final, top.value, top.version, seed)
		}
	}
	t.Logf("acknowledged writes present: final values %s", finalDesc(kv))
}

func finalDesc(kv map[string]string) string {
	var s []string
	for _, k := range keys {
		s = append(s, fmt.Sprintf("%s=%q", k, kv[k]))
	}
	return strings.Join(s, " ")
}

// checkLinearizable runs porcupine over the history; on failure it writes the history and the
// visualization and prints their paths and the replay command.
func checkLinearizable(t *testing.T, rec *recorder, seed uint64) {
	t.Helper()
	rec.mu.Lock()
	ops := slices.Clone(rec.ops)
	rec.mu.Unlock()
	start := time.Now()
	res, info := sim.CheckLinearizable(ops, 2*time.Minute)
	t.Logf("porcupine: %d operations checked in %v: %s; %s", len(ops), time.Since(start).Round(time.Millisecond), res, rec.summary())
	if res == porcupine.Ok {
		return
	}
	dir := os.Getenv("FAULTS_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	base := filepath.Join(dir, fmt.Sprintf("minimon-faults-%s-seed%d", strings.ReplaceAll(t.Name(), "/", "_"), seed))
	html := base + ".html"
	if err := porcupine.VisualizePath(sim.KVModel, info, html); err != nil {
		t.Logf("writing visualization: %v", err)
	}
	var sb strings.Builder
	for _, op := range ops {
		ret := "unknown"
		if op.Return != math.MaxInt64 {
			ret = time.Duration(op.Return).String()
		}
		fmt.Fprintf(&sb, "client %d call %v return %s: %s\n", op.ClientId, time.Duration(op.Call), ret,
			sim.KVModel.DescribeOperation(op.Input, op.Output))
	}
	_ = os.WriteFile(base+".txt", []byte(sb.String()), 0o644)
	t.Errorf("history is not linearizable (%s): visualization %s, history %s; replay: SEED=%d make test-faults",
		res, html, base+".txt", seed)
}

// procNames is for log lines.
func procNames(ps []*e2e.Proc) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Name)
	}
	return strings.Join(s, ",")
}
