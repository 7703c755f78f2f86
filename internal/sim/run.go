package sim

import (
	"fmt"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

// RandomOptions shape one random run.
type RandomOptions struct {
	Chaos    time.Duration // virtual time with faults
	Liveness time.Duration // bound after the heal for a leader plus a committed proposal
	Trace    bool
}

// DefaultRandomOptions: 20 s of chaos, 10 s liveness bound.
func DefaultRandomOptions() RandomOptions {
	return RandomOptions{Chaos: 20 * time.Second, Liveness: 10 * time.Second}
}

// RunResult is the outcome of one seed.
type RunResult struct {
	Seed     uint64
	N        int
	Schedule []string // the faults injected, in order
	Stats    Stats
	Ops      int
	Err      error
	// Porcupine verdict, and the visualization path when it is not Ok.
	Linearizable porcupine.CheckResult
	VisualPath   string
	World        *World
}

// Summary is a short description of the fault schedule.
func (r *RunResult) Summary() string {
	s := fmt.Sprintf("seed %d: %d monitors, %d faults, stats %+v, %d client ops\n", r.Seed, r.N, len(r.Schedule), r.Stats, r.Ops)
	for _, f := range r.Schedule {
		s += "  " + f + "\n"
	}
	return s
}

// RandomRun runs one seed: a random cluster size (3 or 5), a random fault schedule mixing every
// fault kind for opt.Chaos, then a heal and the liveness bound; then the safety checks.
func RandomRun(seed uint64, opt RandomOptions) *RunResult {
	cfg := DefaultConfig(seed, 3)
	// The cluster size and fault mix come from a separate stream so they do not depend on how
	// the world uses its RNG.
	pick := newPicker(seed)
	if pick.IntN(2) == 1 {
		cfg.N = 5
	}
	cfg.Trace = opt.Trace
	res := &RunResult{Seed: seed, N: cfg.N}
	w, err := NewWorld(cfg)
	if err != nil {
		res.Err = err
		return res
	}
	res.World = w
	sched := &scheduler{w: w, res: res}
	sched.plan(opt.Chaos)
	err = w.RunUntil(opt.Chaos)
	if err == nil {
		healAt := w.Now()
		sched.healAll()
		ok, err2 := w.RunUntilCond(healAt+opt.Liveness, func() bool {
			for _, p := range w.putsOK {
				if p[0] >= healAt {
					return true
				}
			}
			return false
		})
		err = err2
		if err == nil && !ok {
			err = fmt.Errorf("liveness: no proposal committed within %v after the heal at %v (roles %v)", opt.Liveness, healAt, w.Roles())
		}
		if err == nil {
			err = w.RunFor(500 * time.Millisecond) // a few more reads after recovery
		}
	}
	res.Err = err
	w.Finish()
	if res.Err == nil {
		res.Err = w.Checker.Err()
	}
	res.Stats = w.stats
	res.Ops = len(w.History.ops)
	if res.Err == nil {
		res.Linearizable, res.VisualPath, res.Err = w.CheckHistory(30 * time.Second)
	}
	return res
}

// Roles lists every node's role.
func (w *World) Roles() []string {
	var out []string
	for _, n := range w.nodes {
		s := n.Role().String()
		if n.paused {
			s += "(paused)"
		}
		out = append(out, s)
	}
	return out
}

// Finish stops the clients, records their open writes as unknown and scans the stores.
func (w *World) Finish() {
	for _, c := range w.clients {
		c.stopped = true
		if op := c.cur; op != nil && !op.closed {
			op.closed = true
			if op.in.Kind == OpPut {
				w.History.Add(c.pid, op.in, OpOutput{Unknown: true}, int64(op.call), 0)
			}
		}
	}
	for _, op := range w.scriptOps {
		if !op.closed && op.in.Kind == OpPut {
			op.closed = true
			w.History.Add(op.c.pid, op.in, OpOutput{Unknown: true}, int64(op.call), 0)
		}
	}
	for _, n := range w.nodes {
		n.ScanStore()
	}
	w.checkAcknowledged()
}

// checkAcknowledged: every acknowledged put is in the value chosen at its version.
func (w *World) checkAcknowledged() {
	for _, op := range w.History.ops {
		in, out := op.Input.(OpInput), op.Output.(OpOutput)
		if in.Kind != OpPut || out.Unknown {
			continue
		}
		val, ok := w.Checker.Chosen(out.Version)
		if !ok {
			w.Checker.Violation("acknowledged put %s=%s at version %d: version never committed", in.Key, in.Value, out.Version)
			continue
		}
		if !txHasPut(val, in.Key, in.Value) {
			w.Checker.Violation("acknowledged put %s=%s at version %d: not in the value chosen there", in.Key, in.Value, out.Version)
		}
	}
}

// CheckHistory runs porcupine on the client history; a failure writes the visualization to a
// temp file.
func (w *World) CheckHistory(timeout time.Duration) (porcupine.CheckResult, string, error) {
	res, info := CheckLinearizable(w.History.ops, timeout)
	if res == porcupine.Ok {
		return res, "", nil
	}
	path := ""
	if f, err := os.CreateTemp("", fmt.Sprintf("sim-seed-%d-*.html", w.cfg.Seed)); err == nil {
		path = f.Name()
		_ = f.Close()
		if err := porcupine.VisualizePath(KVModel, info, path); err != nil {
			path = ""
		}
	}
	return res, path, fmt.Errorf("linearizability: porcupine says %v (visualization: %s)", res, path)
}

// ---- random fault schedule ----

type scheduler struct {
	w   *World
	res *RunResult
}

func (s *scheduler) note(format string, args ...any) {
	line := fmt.Sprintf("t=%.3fs ", s.w.Now().Seconds()) + fmt.Sprintf(format, args...)
	s.res.Schedule = append(s.res.Schedule, line)
	s.w.tracef("FAULT %s", line)
}

// plan schedules a fault action every 0.3-2 s until end; each action draws its kind then.
func (s *scheduler) plan(end time.Duration) {
	w := s.w
	var step func()
	step = func() {
		if w.Now() >= end {
			return
		}
		s.act(end)
		w.After(w.uniform(300*time.Millisecond, 2*time.Second), step)
	}
	w.After(w.uniform(200*time.Millisecond, time.Second), step)
}

func (s *scheduler) leaderOrRandom() int {
	w := s.w
	if w.rng.IntN(2) == 0 {
		for _, n := range w.nodes {
			if n.Role() == Leader {
				return n.idx
			}
		}
	}
	return w.rng.IntN(w.cfg.N)
}

func (s *scheduler) act(end time.Duration) {
	w := s.w
	N := w.cfg.N
	switch k := w.rng.IntN(12); k {
	case 0: // random split
		var a, b []int
		for i := 0; i < N; i++ {
			if w.rng.IntN(2) == 0 {
				a = append(a, i)
			} else {
				b = append(b, i)
			}
		}
		w.Partition(a, b)
		s.note("partition %v | %v", a, b)
	case 1: // isolate (the leader, often)
		i := s.leaderOrRandom()
		w.Isolate(i)
		s.note("isolate %d", i)
	case 2: // one-way
		a, b := w.rng.IntN(N), w.rng.IntN(N)
		if a != b {
			w.BlockOneWay(a, b)
			s.note("block %d->%d", a, b)
		}
	case 3, 4:
		w.Heal()
		s.note("heal partitions")
	case 5, 6: // crash, restart later
		i := s.leaderOrRandom()
		if !w.nodes[i].up {
			return
		}
		inflight := len(w.nodes[i].writes)
		w.Crash(i)
		d := w.uniform(100*time.Millisecond, 3*time.Second)
		s.note("crash %d (%d writes in flight), restart after %v", i, inflight, d.Round(time.Millisecond))
		w.After(d, func() { w.Restart(i) })
	case 7: // crash at the next store write, mid-fsync
		i := s.leaderOrRandom()
		n := w.nodes[i]
		if !n.up {
			return
		}
		d := w.uniform(100*time.Millisecond, 2*time.Second)
		s.note("crash %d at its next store write, restart after %v", i, d.Round(time.Millisecond))
		inc := n.inc
		n.crashAtWrite = func() {
			if n.inc != inc {
				return
			}
			w.Crash(i)
			w.After(d, func() { w.Restart(i) })
		}
	case 8: // pause
		i := s.leaderOrRandom()
		d := w.uniform(50*time.Millisecond, 1500*time.Millisecond)
		w.Pause(i, d)
		s.note("pause %d for %v", i, d.Round(time.Millisecond))
	case 9, 10: // message faults window
		f := Faults{Enabled: true, DropRate: w.rng.Float64() * 0.1, DupRate: w.rng.Float64() * 0.05,
			SpikeRate: w.rng.Float64() * 0.3, MaxSpike: w.uniform(time.Millisecond, 300*time.Millisecond)}
		w.Faults = f
		s.note("message faults drop=%.3f dup=%.3f spike=%.2f max=%v", f.DropRate, f.DupRate, f.SpikeRate, f.MaxSpike.Round(time.Millisecond))
	case 11:
		w.Faults = Faults{}
		s.note("message faults off")
	}
}

func (s *scheduler) healAll() {
	w := s.w
	w.Heal()
	w.Faults = Faults{}
	for i, n := range w.nodes {
		n.crashAtWrite = nil
		if n.paused {
			w.Resume(i)
		}
		if !n.up {
			w.Restart(i)
		}
	}
	s.note("heal everything, restart and resume all")
}

// picker is a tiny separate deterministic stream for the run's shape.
type picker struct{ x uint64 }

func newPicker(seed uint64) *picker { return &picker{x: seed*0x9e3779b97f4a7c15 + 1} }

func (p *picker) IntN(n int) int {
	p.x ^= p.x << 13
	p.x ^= p.x >> 7
	p.x ^= p.x << 17
	return int(p.x % uint64(n))
}
