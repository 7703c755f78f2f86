// Command measure prints the figures of issue 3's closing note on this machine: cold start of
// three monitors to the first acknowledged write, failover after kill -9 of the leader, and
// rejoin of the killed monitor. Each run founds a fresh cluster on free loopback ports; the
// table gives the median, min and max over the runs. It is a script, not a test: nothing is
// asserted.
//
//	go run ./test/e2e/measure -runs 5
//	go run ./test/e2e/measure -bin ./bin -runs 10   # binaries from `make build`
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/minimon/minimon/client"
	"github.com/minimon/minimon/test/e2e"
)

func main() {
	runs := flag.Int("runs", 5, "runs (one fresh cluster each)")
	bin := flag.String("bin", "", "directory holding monitord and monctl (default: build them into a temp dir)")
	keep := flag.Bool("keep", false, "keep the data dirs and logs (path printed)")
	flag.Parse()
	if err := run(*runs, *bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "measure:", err)
		os.Exit(1)
	}
}

// figures are the samples of one kind, in run order.
type figures struct {
	name    string
	samples []time.Duration
}

func run(runs int, bin string, keep bool) error {
	if runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	dir, err := os.MkdirTemp("", "minimon-measure-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Fprintln(os.Stderr, "measure: data and logs in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	var bins e2e.Bins
	if bin == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		bins, err = e2e.Build(ctx, filepath.Join(dir, "bin"))
		cancel()
		if err != nil {
			return err
		}
	} else {
		bins = e2e.Bins{Monitord: filepath.Join(bin, "monitord"), Monctl: filepath.Join(bin, "monctl")}
		if _, err := os.Stat(bins.Monitord); err != nil {
			return err
		}
	}

	quorum := &figures{name: "cold start of 3 -> quorum (a leader with a majority)"}
	cold := &figures{name: "cold start of 3 -> first write acknowledged"}
	failover := &figures{name: "kill -9 leader -> next write acknowledged"}
	rejoin := &figures{name: "restart of killed leader -> in quorum"}
	rejoinRead := &figures{name: "restart of killed leader -> serves latest value"}
	stall := &figures{name: "longest write while the killed leader rejoins"}
	for i := range runs {
		r, err := oneRun(bins, filepath.Join(dir, fmt.Sprintf("run%d", i)))
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		quorum.samples = append(quorum.samples, r.quorum)
		cold.samples = append(cold.samples, r.cold)
		failover.samples = append(failover.samples, r.failover)
		rejoin.samples = append(rejoin.samples, r.rejoin)
		rejoinRead.samples = append(rejoinRead.samples, r.rejoinRead)
		stall.samples = append(stall.samples, r.rejoinStall)
		fmt.Fprintf(os.Stderr, "run %d: quorum %v, first write %v, failover %v, rejoin %v (serves latest %v, longest write %v)\n",
			i+1, ms(r.quorum), ms(r.cold), ms(r.failover), ms(r.rejoin), ms(r.rejoinRead), ms(r.rejoinStall))
	}

	host, _ := os.Hostname()
	fmt.Printf("minimon figures: %d runs, 3 monitors on 127.0.0.1, default protocol options, host %s\n\n", runs, host)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "figure\tmedian\tmin\tmax\tsamples\t")
	for _, f := range []*figures{quorum, cold, failover, rejoin, rejoinRead, stall} {
		s := slices.Sorted(slices.Values(f.samples))
		var all []string
		for _, d := range f.samples {
			all = append(all, ms(d))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", f.name, ms(median(s)), ms(s[0]), ms(s[len(s)-1]), strings.Join(all, " "))
	}
	return w.Flush()
}

func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

type result struct {
	quorum, cold, failover, rejoin, rejoinRead time.Duration
	rejoinStall                                time.Duration // longest write during the rejoin
	staleReads                                 int           // wrong definite answers from the rejoined monitor
}

// newClient: a client with tight hunting backoffs, so the figures measure the cluster and not
// the client's pauses between rounds.
func newClient(endpoints ...string) (*client.Client, error) {
	return client.New(client.Config{Endpoints: endpoints, DialTimeout: time.Second,
		BackoffBase: 2 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
}

// waitListening polls until addr accepts TCP connections. The figure clock keeps running: the
// poll only keeps gRPC's reconnect backoff (1 s after a refused connection) out of the numbers.
func waitListening(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never listened: %w", addr, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func oneRun(bins e2e.Bins, dir string) (r result, err error) {
	c, err := e2e.NewCluster(bins, dir, e2e.Options{})
	if err != nil {
		return r, err
	}
	defer c.KillAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Cold start: every process started, then the first write acknowledged.
	t0 := time.Now()
	if err := c.StartAll(); err != nil {
		return r, err
	}
	for _, p := range c.Procs {
		if err := waitListening(ctx, p.Addr); err != nil {
			return r, err
		}
	}
	cl, err := newClient(c.Addrs()...)
	if err != nil {
		return r, err
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var quorumAt time.Time
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	wg.Go(func() { quorumAt = pollLeader(qctx, cl, c.Procs) })
	if _, err := cl.KVSet(ctx, "cold", []byte("1")); err != nil {
		return r, fmt.Errorf("first write: %w", err)
	}
	r.cold = time.Since(t0)
	wg.Wait()
	if quorumAt.IsZero() {
		return r, errors.New("no leader seen")
	}
	r.quorum = quorumAt.Sub(t0)

	// Failover: all three in quorum and settled, then kill -9 of the leader.
	leader, err := e2e.WaitQuorum(ctx, cl, c.Procs)
	if err != nil {
		return r, err
	}
	for i := range 5 {
		if _, err := cl.KVSet(ctx, fmt.Sprintf("warm-%d", i), []byte("x")); err != nil {
			return r, err
		}
	}
	t0 = time.Now()
	if err := leader.Kill(); err != nil {
		return r, err
	}
	if _, err := cl.KVSet(ctx, "failover", []byte("1")); err != nil {
		return r, fmt.Errorf("write after kill: %w", err)
	}
	r.failover = time.Since(t0)

	// Rejoin: a value written while the old leader is down, then its restart.
	if _, err := cl.KVSet(ctx, "latest", []byte("while-down")); err != nil {
		return r, err
	}
	one, err := newClient(leader.Addr)
	if err != nil {
		return r, err
	}
	defer one.Close()
	// A writer runs through the rejoin: the admission election (design.md 4a rule 6) may
	// hold every write until the restarted monitor's horizon has passed.
	wctx, wstop := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	var maxStall time.Duration
	var werr error
	wwg.Go(func() {
		for i := 0; wctx.Err() == nil; i++ {
			start := time.Now()
			if _, err := cl.KVSet(wctx, fmt.Sprintf("rejoin-%d", i), []byte("x")); err != nil {
				if wctx.Err() == nil {
					werr = err
				}
				return
			}
			maxStall = max(maxStall, time.Since(start))
		}
	})
	defer func() { wstop(); wwg.Wait() }()
	t0 = time.Now()
	if err := leader.Start(); err != nil {
		return r, err
	}
	if err := waitListening(ctx, leader.Addr); err != nil {
		return r, err
	}
	for {
		s, err := e2e.MonStatus(ctx, one, leader, time.Second)
		if err == nil && e2e.InQuorum(s) {
			break
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("mon.%s never rejoined: %v", leader.Name, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.rejoin = time.Since(t0)
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		v, err := one.KVGet(rctx, "latest")
		rcancel()
		if err == nil && string(v) == "while-down" {
			break
		}
		if err == nil || errors.Is(err, client.ErrNotFound) {
			// A definite answer other than the latest value is a stale read.
			r.staleReads++
			fmt.Fprintf(os.Stderr, "measure: STALE READ from rejoined mon.%s after %v: %q, %v\n",
				leader.Name, time.Since(t0), v, err)
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("mon.%s never served the latest value: %q, %v", leader.Name, v, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.rejoinRead = time.Since(t0)
	wstop()
	wwg.Wait()
	if werr != nil {
		return r, fmt.Errorf("write during rejoin: %w", werr)
	}
	r.rejoinStall = maxStall
	return r, nil
}

// pollLeader returns when some monitor first reports itself leader of a majority. Each
// monitor is polled on its own, so one slow to answer does not delay seeing another.
func pollLeader(ctx context.Context, cl *client.Client, procs []*e2e.Proc) time.Time {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan time.Time, len(procs))
	for _, p := range procs {
		go func() {
			for ctx.Err() == nil {
				s, err := e2e.MonStatus(ctx, cl, p, 100*time.Millisecond)
				if err == nil && s.GetState() == "leader" && 2*len(s.GetQuorum()) > len(procs) {
					seen <- time.Now()
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	select {
	case at := <-seen:
		return at
	case <-ctx.Done():
		return time.Time{}
	}
}
