package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/minimon/minimon/client"
)

// The anchor workload of design.md section 10: keys k0..k9999, 128-byte values, C clients
// for 10 s.
const (
	benchDefaultClients   = 16
	benchDefaultDuration  = 10 * time.Second
	benchDefaultValueSize = 128
	benchDefaultKeys      = 10000
	// benchMaxClients bounds goroutines, connections (one per client) and memory (a 35 KiB
	// histogram per client).
	benchMaxClients = 1000
	// benchMaxPrefill bounds the keys written before a read run, so its setup stays short.
	benchMaxPrefill = 1000
	// benchPrefillWorkers bounds the concurrent writes of the prefill.
	benchPrefillWorkers = 32
)

type benchOpts struct {
	clients   int
	duration  time.Duration
	valueSize int
	keys      int
}

// benchReport is the result of one run; the JSON names are the ones design.md promises.
type benchReport struct {
	Op         string  `json:"op"`
	Ops        uint64  `json:"ops"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	Errors     uint64  `json:"errors"`
	P50Ms      float64 `json:"p50_ms"`
	P90Ms      float64 `json:"p90_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	Clients    int     `json:"clients"`
	DurationS  float64 `json:"duration_s"`
	ValueSize  int     `json:"value_size"`
	Keys       int     `json:"keys"`
	FirstError string  `json:"first_error,omitempty"`
}

func newBenchCmd(o *globalOpts) *cobra.Command {
	var bo benchOpts
	cmd := &cobra.Command{
		Use:   "bench write|read",
		Short: "Load the cluster with config-key writes or reads and print ops/s and latency percentiles",
		Long: `bench runs --clients concurrent clients for --duration, each with its own connection and
client id (so each is an independent client to the monitors, which spread them over the
members as Ceph's MonClient does), and prints the operations per second and the latency
percentiles of the successful operations.

write sets random keys k0..k<keys-1> to random values of --value-size bytes. read first
writes min(--keys, 1000) keys, then gets random ones of them. The keys are ordinary
config-key entries: a bench run overwrites k0..k<keys-1>.

Connecting and the read prefill are bounded by --timeout; each operation also is, so a run
lasts at most --duration plus --timeout. Failed operations are counted, not fatal: the
command fails only when no operation succeeded.`,
		Example:   "  monctl bench write\n  monctl bench write --clients 128 --duration 30s\n  monctl -f json bench read --clients 16",
		Args:      checkArgs(cobra.ExactArgs(1)),
		ValidArgs: []string{"write", "read"},
		RunE: func(cmd *cobra.Command, args []string) error {
			op := args[0]
			if op != "write" && op != "read" {
				return usagef("bench %q: want write or read", op)
			}
			if err := bo.validate(); err != nil {
				return err
			}
			rep, err := o.bench(cmd.Context(), op, bo)
			if rep != nil {
				if perr := printBench(o.stdout, o.format, rep); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&bo.clients, "clients", benchDefaultClients, "concurrent clients, each with its own connection")
	f.DurationVar(&bo.duration, "duration", benchDefaultDuration, "how long the load runs")
	f.IntVar(&bo.valueSize, "value-size", benchDefaultValueSize, "bytes per value written")
	f.IntVar(&bo.keys, "keys", benchDefaultKeys, "size of the key space k0..k<keys-1>")
	return cmd
}

func (bo benchOpts) validate() error {
	switch {
	case bo.clients < 1 || bo.clients > benchMaxClients:
		return usagef("invalid --clients %d: want 1..%d", bo.clients, benchMaxClients)
	case bo.duration <= 0:
		return usagef("invalid --duration %v: must be positive", bo.duration)
	case bo.valueSize < 0:
		return usagef("invalid --value-size %d: must not be negative", bo.valueSize)
	case bo.keys < 1:
		return usagef("invalid --keys %d: must be positive", bo.keys)
	}
	return nil
}

// benchWorker is one client's share of a run; merged after the run, so no locking.
type benchWorker struct {
	c        *client.Client
	rng      *mrand.Rand
	hist     latencyHist
	errors   uint64
	firstErr error
}

// bench runs one load and returns its report; the error is set when setup failed (no report)
// or when every operation failed (report and error).
func (o *globalOpts) bench(parent context.Context, op string, bo benchOpts) (*benchReport, error) {
	if parent == nil {
		parent = context.Background()
	}
	cfg := client.Config{Endpoints: o.endpoints(), DialTimeout: min(2*time.Second, o.timeout)}
	seed := uint64(time.Now().UnixNano())
	workers := make([]*benchWorker, bo.clients)
	defer func() {
		for _, w := range workers {
			if w != nil && w.c != nil {
				w.c.Close()
			}
		}
	}()
	for i := range workers {
		c, err := client.New(cfg)
		if err != nil {
			return nil, err
		}
		workers[i] = &benchWorker{c: c, rng: mrand.New(mrand.NewPCG(seed, uint64(i)))}
	}

	// Setup: connect every client (hunting for a monitor in a quorum) and, for reads, write
	// the keys read later; all within --timeout, so the clock starts on a warm cluster.
	setupCtx, cancelSetup := context.WithTimeout(parent, o.timeout)
	defer cancelSetup()
	if err := benchConnect(setupCtx, workers); err != nil {
		return nil, fmt.Errorf("bench setup: %w", err)
	}
	var readKeys []string
	if op == "read" {
		var err error
		if readKeys, err = benchPrefill(setupCtx, workers, bo); err != nil {
			return nil, fmt.Errorf("bench prefill: %w", err)
		}
	}
	cancelSetup()

	start := time.Now()
	deadline := start.Add(bo.duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(parent, o.timeout, deadline, op, bo, readKeys)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	rep := &benchReport{Op: op, Clients: bo.clients, ValueSize: bo.valueSize, Keys: bo.keys,
		DurationS: elapsed.Seconds()}
	var all latencyHist
	var firstErr error
	for _, w := range workers {
		all.merge(&w.hist)
		rep.Errors += w.errors
		if firstErr == nil {
			firstErr = w.firstErr
		}
	}
	rep.Ops = all.count
	if elapsed > 0 {
		rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	}
	rep.P50Ms = ms(all.quantile(0.50))
	rep.P90Ms = ms(all.quantile(0.90))
	rep.P99Ms = ms(all.quantile(0.99))
	rep.MaxMs = ms(all.max)
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
	}
	switch {
	case parent.Err() != nil && rep.Ops == 0:
		return rep, parent.Err()
	case rep.Ops == 0 && firstErr != nil:
		return rep, fmt.Errorf("bench %s: all %d operations failed: %w", op, rep.Errors, firstErr)
	case rep.Ops == 0:
		return rep, fmt.Errorf("bench %s: no operation completed within %v: %w", op, bo.duration, client.ErrTimeout)
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchConnect makes every client find a monitor in a quorum with one cheap read.
func benchConnect(ctx context.Context, workers []*benchWorker) error {
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = w.c.KVExists(ctx, "k0")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// benchPrefill writes k0..k<n-1>, n = min(keys, benchMaxPrefill), and returns the keys that
// were written so reads hit existing keys. Fails only when none was.
func benchPrefill(ctx context.Context, workers []*benchWorker, bo benchOpts) ([]string, error) {
	n := min(bo.keys, benchMaxPrefill)
	ok := make([]bool, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for _, w := range workers[:min(len(workers), benchPrefillWorkers)] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			val := make([]byte, bo.valueSize)
			for i := range next {
				randomValue(w.rng, val)
				_, errs[i] = w.c.KVSet(ctx, "k"+strconv.Itoa(i), val)
				ok[i] = errs[i] == nil
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	var keys []string
	var firstErr error
	for i := range n {
		if ok[i] {
			keys = append(keys, "k"+strconv.Itoa(i))
		} else if firstErr == nil {
			firstErr = errs[i]
		}
	}
	if len(keys) == 0 {
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		return nil, firstErr
	}
	return keys, nil
}

const valueAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// randomValue fills v with random printable bytes (so `config-key get` of a bench key is
// readable).
func randomValue(rng *mrand.Rand, v []byte) {
	for i := range v {
		v[i] = valueAlphabet[rng.IntN(len(valueAlphabet))]
	}
}

// run issues operations back to back until deadline. An operation started before the
// deadline finishes (bounded by opTimeout); one cut by the caller's cancellation (Ctrl-C)
// counts neither as done nor as failed.
func (w *benchWorker) run(ctx context.Context, opTimeout time.Duration, deadline time.Time, op string, bo benchOpts, readKeys []string) {
	val := make([]byte, bo.valueSize)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		var key string
		if op == "read" {
			key = readKeys[w.rng.IntN(len(readKeys))]
		} else {
			key = "k" + strconv.Itoa(w.rng.IntN(bo.keys))
			randomValue(w.rng, val)
		}
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		t0 := time.Now()
		var err error
		if op == "read" {
			_, err = w.c.KVGet(octx, key)
		} else {
			// The client is done with val when KVSet returns, so it is reused.
			_, err = w.c.KVSet(octx, key, val)
		}
		lat := time.Since(t0)
		cancel()
		switch {
		case err == nil:
			w.hist.record(lat)
		case ctx.Err() != nil && errors.Is(err, context.Canceled):
		default:
			w.errors++
			if w.firstErr == nil {
				w.firstErr = err
			}
		}
	}
}

// latencyHist is a log-linear histogram like HdrHistogram's: histSub buckets per power of
// two, so a quantile is exact to within 1/histSub (< 1%) in constant memory whatever the
// number of samples. Values are nanoseconds.
type latencyHist struct {
	counts [histBuckets]uint64
	count  uint64
	max    time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // 128 buckets per power of two
	histMaxExp  = 40               // values clamp at 2^40 ns (18 min)
	histBuckets = (histMaxExp - histSubBits + 2) * histSub
)

// histIndex maps v >= 0 to its bucket: values below histSub have their own bucket; above, the
// top histSubBits+1 bits select it.
func histIndex(v uint64) int {
	if v >= 1<<histMaxExp {
		v = 1<<histMaxExp - 1
	}
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	return (shift+1)*histSub + int(v>>shift) - histSub
}

// histUpper is the highest value of bucket i (what a quantile reports, as HdrHistogram's
// highest equivalent value does: never optimistic).
func histUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	base := uint64(i%histSub + histSub)
	return (base+1)<<shift - 1
}

func (h *latencyHist) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.count++
	h.max = max(h.max, d)
}

func (h *latencyHist) merge(o *latencyHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.count += o.count
	h.max = max(h.max, o.max)
}

// quantile returns the latency below or at which a fraction q of the samples lie (0 when
// empty), never above the maximum recorded.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.count)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(histUpper(i)), h.max)
		}
	}
	return h.max
}

func printBench(w io.Writer, format string, r *benchReport) error {
	if format != "plain" {
		return writeJSONReport(w, format, r)
	}
	s := fmt.Sprintf("bench %s: %d clients, %.1fs, %d-byte values, %d keys\n"+
		"ops %d (%.1f/s), errors %d\n"+
		"latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		r.Op, r.Clients, r.DurationS, r.ValueSize, r.Keys,
		r.Ops, r.OpsPerSec, r.Errors, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	if r.FirstError != "" {
		s += "first error: " + r.FirstError + "\n"
	}
	_, err := io.WriteString(w, s)
	return err
}
