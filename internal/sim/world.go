package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"google.golang.org/protobuf/proto"
)

// Config configures a simulated cluster. Zero fields take the defaults of DefaultConfig.
type Config struct {
	Seed uint64
	N    int // number of monitors (3 or 5 in the tests)

	// Protocol timing (design.md 4a LAN defaults).
	Lease           time.Duration
	RenewInterval   time.Duration
	LeaseAckTimeout time.Duration
	AcceptTimeout   time.Duration
	ElectionTimeout time.Duration
	ProbeInterval   time.Duration
	ClockRateError  float64
	// LeaseOverride, if set, gives a node its own mon_lease (mixed lease lengths).
	LeaseOverride map[int]time.Duration

	PaxosMin, PaxosTrimMin, PaxosTrimMax uint64

	Tick time.Duration // each node's timer tick, in its local time

	// Network and disk latency (uniform in [min, max]).
	MinLatency, MaxLatency time.Duration
	MinFsync, MaxFsync     time.Duration

	// Clients.
	Clients       int
	Keys          int
	ThinkTime     time.Duration // max pause between a client's operations
	ClientTimeout time.Duration
	NoClients     bool

	// Skew, if set, fixes each node's clock rate error (else random within ±ClockRateError/2,
	// so any two clocks differ in rate by at most ClockRateError).
	Skew []float64

	// Trace keeps a text trace of the run (World.Trace).
	Trace bool
}

// DefaultConfig returns the LAN defaults of design.md 4a.
func DefaultConfig(seed uint64, n int) Config {
	return Config{
		Seed: seed, N: n,
		Lease: 500 * time.Millisecond, RenewInterval: 100 * time.Millisecond,
		LeaseAckTimeout: 600 * time.Millisecond, AcceptTimeout: time.Second,
		ElectionTimeout: 300 * time.Millisecond, ProbeInterval: 250 * time.Millisecond,
		ClockRateError: 0.01,
		PaxosMin:       40, PaxosTrimMin: 10, PaxosTrimMax: 50,
		Tick:       10 * time.Millisecond,
		MinLatency: 200 * time.Microsecond, MaxLatency: 3 * time.Millisecond,
		MinFsync: 500 * time.Microsecond, MaxFsync: 5 * time.Millisecond,
		Clients: 3, Keys: 3, ThinkTime: 60 * time.Millisecond, ClientTimeout: 2 * time.Second,
	}
}

// Msg is one message in the virtual network.
type Msg struct {
	From, To int32
	Paxos    *minimonv1.PaxosMessage
	Election *minimonv1.ElectionMessage
	Probe    *minimonv1.ProbeMessage
	SentAt   time.Duration // virtual send time
}

func (m *Msg) String() string {
	if m.Paxos != nil {
		return fmt.Sprintf("paxos %v %d->%d e%d", m.Paxos.GetOp(), m.From, m.To, m.Paxos.GetEpoch())
	}
	if m.Probe != nil {
		return fmt.Sprintf("probe %v %d->%d fc%d lc%d", m.Probe.GetOp(), m.From, m.To, m.Probe.GetFirstCommitted(), m.Probe.GetLastCommitted())
	}
	return fmt.Sprintf("election %v %d->%d e%d", m.Election.GetOp(), m.From, m.To, m.Election.GetEpoch())
}

// IsPaxos reports whether m is a paxos message with op.
func (m *Msg) IsPaxos(op minimonv1.PaxosMessage_Op) bool {
	return m.Paxos != nil && m.Paxos.GetOp() == op
}

// Verdict is what a hook decides for a message. The zero Verdict lets the message through
// (subject to partitions and random faults).
type Verdict struct {
	Drop  bool
	Hold  bool          // keep it until Release
	Delay time.Duration // extra latency
	Dups  int           // extra copies, each with its own latency
	Pass  bool          // deliver with normal latency and skip the random faults
}

func (v Verdict) isZero() bool { return v == Verdict{} }

// Hook inspects every message as it is sent.
type Hook func(m *Msg) Verdict

// Faults are the random message faults, active while Enabled.
type Faults struct {
	Enabled   bool
	DropRate  float64
	DupRate   float64
	SpikeRate float64       // chance of an extra latency spike
	MaxSpike  time.Duration // spikes are uniform in [0, MaxSpike]: reordering
}

// World is one simulated cluster.
type World struct {
	cfg    Config
	rng    *rand.Rand
	clk    clock
	nodes  []*Node
	hooks  []Hook
	held   []*Msg
	block  [][]bool // block[from][to]
	Faults Faults

	Checker   *Checker
	History   History
	clients   []*client
	script    *client
	scriptOps []*clientOp
	// PersistHook, if set, adds latency to a node's store write (slow disks).
	PersistHook func(n *Node, tx *minimonv1.Transaction) time.Duration

	putsOK [][2]time.Duration // (call, return) of acknowledged puts
	trace  []string
	stats  Stats
}

// Stats counts what happened in a run.
type Stats struct {
	Events, Sent, Delivered, Dropped, Dups           int
	Commits, Elections, Crashes, Restarts, Pauses    int
	PutsOK, PutsUnknown, PutsFailed, Reads, ReadsErr int
}

// NewWorld builds a cluster of cfg.N nodes, all up, and validates the timing.
func NewWorld(cfg Config) (*World, error) {
	d := DefaultConfig(cfg.Seed, cfg.N)
	fill(&cfg.Lease, d.Lease)
	fill(&cfg.RenewInterval, d.RenewInterval)
	fill(&cfg.LeaseAckTimeout, d.LeaseAckTimeout)
	fill(&cfg.AcceptTimeout, d.AcceptTimeout)
	fill(&cfg.ElectionTimeout, d.ElectionTimeout)
	fill(&cfg.ProbeInterval, d.ProbeInterval)
	fill(&cfg.Tick, d.Tick)
	fill(&cfg.MaxLatency, d.MaxLatency)
	fill(&cfg.MaxFsync, d.MaxFsync)
	fill(&cfg.ThinkTime, d.ThinkTime)
	fill(&cfg.ClientTimeout, d.ClientTimeout)
	if cfg.ClockRateError == 0 {
		cfg.ClockRateError = d.ClockRateError
	}
	if cfg.PaxosMin == 0 {
		cfg.PaxosMin, cfg.PaxosTrimMin, cfg.PaxosTrimMax = d.PaxosMin, d.PaxosTrimMin, d.PaxosTrimMax
	}
	if cfg.Clients == 0 {
		cfg.Clients = d.Clients
	}
	if cfg.Keys == 0 {
		cfg.Keys = d.Keys
	}
	if cfg.N <= 0 {
		return nil, fmt.Errorf("sim: N must be > 0")
	}
	w := &World{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	w.Checker = NewChecker(w.Now)
	w.block = make([][]bool, cfg.N)
	for i := range w.block {
		w.block[i] = make([]bool, cfg.N)
	}
	for i := 0; i < cfg.N; i++ {
		skew := (w.rng.Float64() - 0.5) * cfg.ClockRateError
		if i < len(cfg.Skew) {
			skew = cfg.Skew[i]
		}
		n, err := newNode(w, i, skew)
		if err != nil {
			return nil, err
		}
		w.nodes = append(w.nodes, n)
	}
	for _, n := range w.nodes {
		if err := n.start(); err != nil {
			return nil, err
		}
	}
	if !cfg.NoClients {
		for i := 0; i < cfg.Clients; i++ {
			w.clients = append(w.clients, newClient(w, i))
		}
	}
	return w, nil
}

func fill(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Now is the virtual time since the start of the run.
func (w *World) Now() time.Duration { return w.clk.now }

// Node returns node i.
func (w *World) Node(i int) *Node { return w.nodes[i] }

// Nodes returns every node.
func (w *World) Nodes() []*Node { return w.nodes }

// Stats returns the counters so far.
func (w *World) Stats() Stats { return w.stats }

// Config returns the effective configuration.
func (w *World) Config() Config { return w.cfg }

// Rand is the run's one RNG (scripts may use it; every use changes the run).
func (w *World) Rand() *rand.Rand { return w.rng }

func (w *World) tracef(format string, args ...any) {
	if w.cfg.Trace {
		w.trace = append(w.trace, fmt.Sprintf("%10.6f ", w.clk.now.Seconds())+fmt.Sprintf(format, args...))
	}
}

// Trace returns the text trace (Config.Trace).
func (w *World) Trace() string { return strings.Join(w.trace, "\n") }

// After schedules a world action (scripts: crash, partition, ...) at virtual delay d from now.
func (w *World) After(d time.Duration, fn func()) {
	w.clk.schedule(&event{at: w.clk.now + d, node: -1, fn: fn})
}

// At schedules a world action at absolute virtual time t.
func (w *World) At(t time.Duration, fn func()) {
	w.clk.schedule(&event{at: t, node: -1, fn: fn})
}

// nodeEvent schedules fn on node i after d. inc binds it to the current incarnation (timers,
// store writes); 0 delivers to whatever incarnation runs then (network, clients).
func (w *World) nodeEvent(i int, d time.Duration, inc uint64, tick bool, fn func()) {
	w.clk.schedule(&event{at: w.clk.now + d, node: i, inc: inc, tick: tick, fn: fn})
}

// RunFor runs the simulation for d of virtual time, or until a safety violation.
func (w *World) RunFor(d time.Duration) error { return w.RunUntil(w.clk.now + d) }

// RunUntil runs until virtual time t (or a violation).
func (w *World) RunUntil(t time.Duration) error {
	_, err := w.RunUntilCond(t, nil)
	return err
}

// RunUntilCond runs until cond holds (checked after every event; nil: never) or virtual time t;
// it reports whether cond held.
func (w *World) RunUntilCond(t time.Duration, cond func() bool) (bool, error) {
	for {
		if err := w.Checker.Err(); err != nil {
			return false, err
		}
		if cond != nil && cond() {
			return true, nil
		}
		e := w.clk.next(t)
		if e == nil {
			w.clk.now = max(w.clk.now, t)
			return cond != nil && cond(), nil
		}
		w.run(e)
	}
}

func (w *World) run(e *event) {
	w.stats.Events++
	if e.node < 0 {
		e.fn()
		return
	}
	n := w.nodes[e.node]
	if !n.up || (e.inc != 0 && e.inc != n.inc) {
		return
	}
	if n.paused {
		if e.tick {
			n.pausedTick = e
		} else {
			n.pausedQ = append(n.pausedQ, e)
		}
		return
	}
	e.fn()
}

// ---- network ----

// AddHook installs a hook; it returns a function that removes it.
func (w *World) AddHook(h Hook) (remove func()) {
	w.hooks = append(w.hooks, h)
	idx := len(w.hooks) - 1
	return func() { w.hooks[idx] = nil }
}

// ClearHooks removes every hook.
func (w *World) ClearHooks() { w.hooks = nil }

// Release delivers every held message matching pred (nil: all) now, with normal latency.
func (w *World) Release(pred func(*Msg) bool) int {
	var keep []*Msg
	n := 0
	for _, m := range w.held {
		if pred == nil || pred(m) {
			w.deliver(m, w.latency())
			n++
		} else {
			keep = append(keep, m)
		}
	}
	w.held = keep
	return n
}

// Held returns the held messages.
func (w *World) Held() []*Msg { return w.held }

// Partition splits the nodes into groups that cannot talk to each other (nodes not listed form
// one more group). It replaces any earlier partition.
func (w *World) Partition(groups ...[]int) {
	g := make([]int, w.cfg.N)
	for i := range g {
		g[i] = -1
	}
	for gi, grp := range groups {
		for _, i := range grp {
			g[i] = gi
		}
	}
	for a := range w.block {
		for b := range w.block[a] {
			w.block[a][b] = a != b && g[a] != g[b]
		}
	}
	w.tracef("partition %v", groups)
}

// BlockOneWay drops every message from -> to (asymmetric partition).
func (w *World) BlockOneWay(from, to int) {
	w.block[from][to] = true
	w.tracef("block %d->%d", from, to)
}

// Isolate cuts node i off in both directions.
func (w *World) Isolate(i int) {
	for j := range w.block {
		if j != i {
			w.block[i][j], w.block[j][i] = true, true
		}
	}
	w.tracef("isolate %d", i)
}

// Heal removes every partition.
func (w *World) Heal() {
	for a := range w.block {
		for b := range w.block[a] {
			w.block[a][b] = false
		}
	}
	w.tracef("heal")
}

// Connected reports whether a and b can exchange messages both ways.
func (w *World) Connected(a, b int) bool { return !w.block[a][b] && !w.block[b][a] }

func (w *World) latency() time.Duration {
	return w.uniform(w.cfg.MinLatency, w.cfg.MaxLatency)
}

func (w *World) uniform(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

// send is called by a node for each outgoing message.
func (w *World) send(m *Msg) {
	m.SentAt = w.clk.now
	w.stats.Sent++
	if int(m.To) < 0 || int(m.To) >= w.cfg.N || m.To == m.From {
		w.stats.Dropped++
		return
	}
	for _, h := range w.hooks {
		if h == nil {
			continue
		}
		v := h(m)
		if v.isZero() {
			continue
		}
		w.tracef("hook %v: %+v", m, v)
		switch {
		case v.Drop:
			w.stats.Dropped++
			return
		case v.Hold:
			w.held = append(w.held, m)
			return
		}
		w.deliver(m, w.latency()+v.Delay)
		for k := 0; k < v.Dups; k++ {
			w.deliver(m, w.latency()+v.Delay+w.latency())
		}
		return
	}
	f := w.Faults
	if f.Enabled {
		if w.rng.Float64() < f.DropRate {
			w.stats.Dropped++
			return
		}
	}
	lat := w.latency()
	if f.Enabled && w.rng.Float64() < f.SpikeRate {
		lat += w.uniform(0, f.MaxSpike)
	}
	w.deliver(m, lat)
	if f.Enabled && w.rng.Float64() < f.DupRate {
		w.stats.Dups++
		w.deliver(m, lat+w.uniform(0, f.MaxSpike+w.cfg.MaxLatency))
	}
}

func (w *World) deliver(m *Msg, lat time.Duration) {
	if w.block[m.From][m.To] {
		w.stats.Dropped++
		return
	}
	to := int(m.To)
	w.nodeEvent(to, lat, 0, false, func() {
		if w.block[m.From][m.To] { // a partition that began while it was in flight
			w.stats.Dropped++
			return
		}
		w.stats.Delivered++
		w.tracef("deliver %v", m)
		c := &Msg{From: m.From, To: m.To, SentAt: m.SentAt}
		switch {
		case m.Paxos != nil:
			c.Paxos = proto.Clone(m.Paxos).(*minimonv1.PaxosMessage)
		case m.Election != nil:
			c.Election = proto.Clone(m.Election).(*minimonv1.ElectionMessage)
		case m.Probe != nil:
			c.Probe = proto.Clone(m.Probe).(*minimonv1.ProbeMessage)
		}
		w.nodes[to].receive(c)
	})
}

// ---- node faults ----

// Crash stops node i at once: it loses its memory; store writes in flight are each either fully
// applied or not at all, in issue order (a random prefix survives).
func (w *World) Crash(i int) {
	n := w.nodes[i]
	if !n.up {
		return
	}
	w.stats.Crashes++
	n.crash()
}

// Restart brings a crashed node back with its store and a new incarnation.
func (w *World) Restart(i int) {
	n := w.nodes[i]
	if n.up {
		return
	}
	w.stats.Restarts++
	if err := n.restart(); err != nil {
		w.Checker.Violation("node %d restart: %v", i, err)
	}
}

// Pause stops node i from processing anything for d (its clock keeps running); it then resumes
// with its queued events: messages and requests first, then one timer tick.
func (w *World) Pause(i int, d time.Duration) {
	n := w.nodes[i]
	if !n.up || n.paused {
		return
	}
	w.stats.Pauses++
	n.paused = true
	w.tracef("pause %d for %v", i, d)
	inc := n.inc
	w.After(d, func() {
		if n.inc == inc {
			w.Resume(i)
		}
	})
}

// Resume ends a pause.
func (w *World) Resume(i int) {
	n := w.nodes[i]
	if !n.paused {
		return
	}
	n.paused = false
	w.tracef("resume %d (%d queued)", i, len(n.pausedQ))
	q, tick := n.pausedQ, n.pausedTick
	n.pausedQ, n.pausedTick = nil, nil
	for k, e := range q {
		if !n.up {
			return
		}
		if n.paused { // paused again while catching up: keep the rest queued
			n.pausedQ = append(q[k:len(q):len(q)], n.pausedQ...)
			if n.pausedTick == nil {
				n.pausedTick = tick
			}
			return
		}
		if e.inc == 0 || e.inc == n.inc {
			e.fn()
		}
	}
	if tick != nil && n.up && !n.paused && tick.inc == n.inc {
		tick.fn()
	}
}
