package sim

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

func envUint(t *testing.T, name string, def uint64) uint64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return v
}

// TestRandomSeeds runs seeds from SIM_SEED (default 1), at most SIM_SEEDS of them, for as long
// as SIM_BUDGET_SECONDS (default 60) of wall time allows. Each seed is deterministic.
func TestRandomSeeds(t *testing.T) {
	start := envUint(t, "SIM_SEED", 1)
	limit := envUint(t, "SIM_SEEDS", 0)
	budget := time.Duration(envUint(t, "SIM_BUDGET_SECONDS", 60)) * time.Second
	if testing.Short() {
		budget = min(budget, 10*time.Second)
	}
	began := time.Now()
	ran := 0
	for seed := start; limit == 0 || uint64(ran) < limit; seed++ {
		if ran > 0 && time.Since(began) >= budget {
			break
		}
		opt := DefaultRandomOptions()
		res := RandomRun(seed, opt)
		ran++
		if res.Err != nil {
			tracePath := ""
			// Replay with a trace for the diagnosis (same seed, same run).
			opt.Trace = true
			if rr := RandomRun(seed, opt); rr.World != nil {
				if f, err := os.CreateTemp("", fmt.Sprintf("sim-trace-%d-*.txt", seed)); err == nil {
					_, _ = f.WriteString(rr.World.Trace())
					_ = f.Close()
					tracePath = f.Name()
				}
			}
			t.Fatalf("seed %d failed: %v\n%s\ntrace: %s\nreplay: SIM_SEED=%d SIM_SEEDS=1 go test ./internal/sim/ -run TestRandomSeeds -v",
				seed, res.Err, res.Summary(), tracePath, seed)
		}
		if testing.Verbose() {
			t.Logf("seed %d ok: N=%d faults=%d commits=%d elections=%d putsOK=%d unknown=%d reads=%d events=%d",
				seed, res.N, len(res.Schedule), res.Stats.Commits, res.Stats.Elections, res.Stats.PutsOK,
				res.Stats.PutsUnknown, res.Stats.Reads, res.Stats.Events)
		}
	}
	t.Logf("ran %d seeds from %d in %v", ran, start, time.Since(began).Round(time.Millisecond))
}

// The same seed gives the same run, byte for byte.
func TestDeterminism(t *testing.T) {
	opt := RandomOptions{Chaos: 3 * time.Second, Liveness: 10 * time.Second, Trace: true}
	a := RandomRun(7, opt)
	b := RandomRun(7, opt)
	if a.World == nil || b.World == nil {
		t.Fatalf("no world: %v %v", a.Err, b.Err)
	}
	if ta, tb := a.World.Trace(), b.World.Trace(); ta != tb || a.Stats != b.Stats {
		t.Fatalf("two runs of seed 7 differ: stats %+v vs %+v", a.Stats, b.Stats)
	}
	if a.Stats.Events == 0 || a.Stats.Commits == 0 {
		t.Fatalf("run did nothing: %+v", a.Stats)
	}
}
