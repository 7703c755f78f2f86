package sim

import (
	"encoding/binary"
	"math/rand/v2"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/node"
	"github.com/minimon/minimon/internal/paxos"
)

// Role is a node's monitor state (node.Role; Down while crashed).
type Role = node.Role

// Roles.
const (
	Down          = node.Down
	Probing       = node.Probing
	Synchronizing = node.Synchronizing
	Electing      = node.Electing
	Leader        = node.Leader
	Peon          = node.Peon
)

// Node is one simulated monitor: the store survives crashes, everything else is memory. The
// protocol logic is internal/node's, the daemon's own; this wrapper is its Env on virtual time.
type Node struct {
	w     *World
	idx   int
	rank  int32
	skew  float64
	base  time.Time // local monotonic clock origin
	store *kvstore.Mem

	up, paused bool
	pausedQ    []*event
	pausedTick *event
	inc        uint64

	nd *node.Node

	writes      []*write // in flight, in issue order
	lastWriteAt time.Duration
	syncs       int

	// crashAtWrite, if set, crashes the node while its next store write is in flight.
	crashAtWrite func()
}

type write struct {
	tx   *minimonv1.Transaction
	done func()
}

func newNode(w *World, idx int, skew float64) (*Node, error) {
	n := &Node{
		w: w, idx: idx, rank: int32(idx), skew: skew, store: kvstore.NewMem(),
		base: time.Unix(1_000_000+int64(w.rng.IntN(1_000_000)), 0),
	}
	return n, nil
}

// Index is the node's index (= rank).
func (n *Node) Index() int { return n.idx }

// Up reports whether the node runs (paused counts as up).
func (n *Node) Up() bool { return n.up }

// Paused reports whether the node is paused.
func (n *Node) Paused() bool { return n.paused }

// Role is the node's monitor state.
func (n *Node) Role() Role {
	if !n.up {
		return Down
	}
	return n.nd.Role()
}

// Epoch is the election epoch of the node's current quorum.
func (n *Node) Epoch() uint64 { return n.epoch() }

// Paxos exposes the node's paxos instance (nil while down).
func (n *Node) Paxos() *paxos.Paxos {
	if !n.up {
		return nil
	}
	return n.nd.Paxos()
}

// Core is the node's protocol logic (internal/node), nil before the first start.
func (n *Node) Core() *node.Node { return n.nd }

// Inspection helpers for the tests (the last incarnation's state also while down).
func (n *Node) px() *paxos.Paxos      { return n.nd.Paxos() }
func (n *Node) el() *election.Elector { return n.nd.Elector() }
func (n *Node) epoch() uint64         { return n.nd.Status().Epoch }
func (n *Node) leader() int32         { return n.nd.Status().Leader }
func (n *Node) quorum() []int32       { return n.nd.Status().Quorum }

// Store exposes the node's store.
func (n *Node) Store() *kvstore.Mem { return n.store }

// Syncs counts full syncs this node made.
func (n *Node) Syncs() int { return n.syncs }

// LocalNow is the node's monotonic clock: base + elapsed*(1+skew).
func (n *Node) LocalNow() time.Time {
	return n.base.Add(time.Duration(float64(n.w.clk.now) * (1 + n.skew)))
}

// localToVirtual converts a local duration to virtual time on this node's clock.
func (n *Node) localToVirtual(d time.Duration) time.Duration {
	return time.Duration(float64(d) / (1 + n.skew))
}

func (n *Node) members() []int32 {
	m := make([]int32, n.w.cfg.N)
	for i := range m {
		m[i] = int32(i)
	}
	return m
}

func (n *Node) lease() time.Duration {
	if d, ok := n.w.cfg.LeaseOverride[n.idx]; ok {
		return d
	}
	return n.w.cfg.Lease
}

// PaxosConfig is the paxos configuration of node idx in cfg.
func PaxosConfig(cfg Config, idx int, members []int32, incarnation uint64) paxos.Config {
	lease := cfg.Lease
	if d, ok := cfg.LeaseOverride[idx]; ok {
		lease = d
	}
	return paxos.Config{
		Rank: int32(idx), Members: members,
		Lease: lease, RenewInterval: cfg.RenewInterval, LeaseAckTimeout: cfg.LeaseAckTimeout,
		AcceptTimeout: cfg.AcceptTimeout, ClockRateError: cfg.ClockRateError,
		PaxosMin: cfg.PaxosMin, PaxosTrimMin: cfg.PaxosTrimMin, PaxosTrimMax: cfg.PaxosTrimMax,
		MaxJoinDrift: 10, Incarnation: incarnation,
	}
}

// start builds the protocol logic from the store (first start and every restart).
func (n *Node) start() error {
	w := n.w
	n.inc++
	now := n.LocalNow()
	stored, err := election.LoadEpoch(n.store)
	if err != nil {
		return err
	}
	cfg := node.Config{
		Rank: n.rank, Members: n.members(), MonmapEpoch: 1,
		Paxos: PaxosConfig(w.cfg, n.idx, n.members(), w.rng.Uint64()|1),
		Election: election.Config{
			ElectionTimeout: w.cfg.ElectionTimeout,
			LeaseAckTimeout: w.cfg.LeaseAckTimeout, RenewInterval: w.cfg.RenewInterval,
			ClockRateError: w.cfg.ClockRateError,
			Rand:           rand.New(rand.NewPCG(w.rng.Uint64(), w.rng.Uint64())),
		},
		ProbeTimeout:   w.cfg.ProbeInterval,
		AdmitInterval:  2 * w.cfg.ElectionTimeout,
		NewIncarnation: func() uint64 { return w.rng.Uint64() | 1 },
		Clock:          n.LocalNow,
	}
	nd, err := node.New(cfg, storeRef{n}, simEnv{n}, now)
	if err != nil {
		return err
	}
	idx := n.idx
	nd.OnCommit(func(es []paxos.Entry) {
		for _, e := range es {
			w.Checker.Commit(idx, e.Version, e.Value)
			w.stats.Commits++
		}
	})
	nd.OnOutcome(func(o election.Outcome) {
		w.stats.Elections++
		w.Checker.Leader(o.Epoch, o.Leader)
	})
	nd.OnRoleChange(func(old, new node.Role, why string) {
		w.tracef("node %d %v -> %v: %s", idx, old, new, why)
	})
	n.nd = nd
	n.up, n.paused = true, false
	n.writes, n.lastWriteAt = nil, 0
	n.observeStore()
	w.tracef("node %d start inc %d lc %d epoch %d", n.idx, n.inc, nd.Paxos().LastCommitted(), stored)
	inc := n.inc
	w.nodeEvent(n.idx, n.localToVirtual(time.Duration(w.rng.Int64N(int64(w.cfg.Tick)))), inc, true, n.tick)
	nd.Start(now)
	return nil
}

func (n *Node) crash() {
	w := n.w
	// Each in-flight write is atomic; a random prefix of them reached the disk.
	k := w.rng.IntN(len(n.writes) + 1)
	for _, wr := range n.writes[:k] {
		n.applyWrite(wr.tx)
	}
	w.tracef("crash %d (%d of %d in-flight writes survive)", n.idx, k, len(n.writes))
	n.nd.Stop() // pending proposals: outcome unknown
	n.up, n.paused = false, false
	n.pausedQ, n.pausedTick = nil, nil
	n.writes = nil
	n.inc++ // pending timers and writes of the old incarnation die with it
}

func (n *Node) restart() error {
	n.w.tracef("restart %d", n.idx)
	return n.start()
}

// storeRef reads the node's current store, which a full sync replaces.
type storeRef struct{ n *Node }

func (s storeRef) Get(b string, k []byte) ([]byte, error) { return s.n.store.Get(b, k) }
func (s storeRef) Apply(tx *minimonv1.Transaction) error  { return s.n.store.Apply(tx) }
func (s storeRef) Import(c *minimonv1.ExportChunk) error  { return s.n.store.Import(c) }
func (s storeRef) Sizes() (map[string]int64, error)       { return s.n.store.Sizes() }
func (s storeRef) Close() error                           { return nil }
func (s storeRef) ForEach(b string, start []byte, fn func(k, v []byte) error) error {
	return s.n.store.ForEach(b, start, fn)
}
func (s storeRef) Export(b string, k []byte, maxBytes, maxKeys int) (*minimonv1.ExportChunk, error) {
	return s.n.store.Export(b, k, maxBytes, maxKeys)
}

// simEnv is node.Env on the virtual clock and network.
type simEnv struct{ n *Node }

func (e simEnv) Persist(tx *minimonv1.Transaction, done func()) { e.n.persist(tx, done) }

func (e simEnv) Send(to int32, env *minimonv1.PeerEnvelope) {
	m := &Msg{From: e.n.rank, To: to, Paxos: env.GetPaxos(), Election: env.GetElection(), Probe: env.GetProbe()}
	e.n.w.send(m)
}

// Sync runs the full sync as its own event (never re-entering the node from inside its call).
func (e simEnv) Sync(from int32) {
	n := e.n
	n.w.nodeEvent(n.idx, 0, n.inc, false, func() { n.fullSync(int(from)) })
}

// ---- store writes ----

// persist queues a store write with a modelled fsync latency; writes complete in issue order
// while the node keeps processing events.
func (n *Node) persist(tx *minimonv1.Transaction, done func()) {
	w := n.w
	lat := w.uniform(w.cfg.MinFsync, w.cfg.MaxFsync)
	if w.PersistHook != nil {
		lat += w.PersistHook(n, tx)
	}
	at := max(w.clk.now+lat, n.lastWriteAt)
	n.lastWriteAt = at
	wr := &write{tx: tx, done: done}
	n.writes = append(n.writes, wr)
	if f := n.crashAtWrite; f != nil {
		n.crashAtWrite = nil
		w.nodeEvent(n.idx, w.uniform(0, at-w.clk.now), n.inc, false, f)
	}
	w.nodeEvent(n.idx, at-w.clk.now, n.inc, false, func() {
		if len(n.writes) == 0 || n.writes[0] != wr {
			w.Checker.Violation("node %d: store writes completing out of order", n.idx)
			return
		}
		n.writes = n.writes[1:]
		n.applyWrite(wr.tx)
		wr.done()
	})
}

func (n *Node) applyWrite(tx *minimonv1.Transaction) {
	if err := n.store.Apply(tx); err != nil {
		n.w.Checker.Violation("node %d: store apply: %v", n.idx, err)
		return
	}
	n.observeStore()
}

// observeStore feeds the checker from the durable state: last/first committed and the values.
func (n *Node) observeStore() {
	c := n.w.Checker
	lc := n.storedU64(paxos.KeyLastCommitted)
	fc := n.storedU64(paxos.KeyFirstCommitted)
	c.LastCommitted(n.idx, lc)
	c.FirstCommitted(n.idx, fc)
	if v, _ := n.store.Get(paxos.Bucket, kvstore.U64Key(lc)); v != nil {
		c.Commit(n.idx, lc, v)
	}
}

func (n *Node) storedU64(key string) uint64 {
	v, err := n.store.Get(paxos.Bucket, []byte(key))
	if err != nil || len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// ScanStore checks every stored version in [fc, lc] against the chosen values.
func (n *Node) ScanStore() {
	lc := n.storedU64(paxos.KeyLastCommitted)
	fc := n.storedU64(paxos.KeyFirstCommitted)
	for v := max(fc, 1); v <= lc; v++ {
		val, _ := n.store.Get(paxos.Bucket, kvstore.U64Key(v))
		if val == nil {
			n.w.Checker.Violation("node %d: version %d missing from the store (fc %d lc %d)", n.idx, v, fc, lc)
			return
		}
		n.w.Checker.Commit(n.idx, v, val)
	}
}

// ---- driving the protocol logic ----

func (n *Node) tick() {
	n.nd.Tick(n.LocalNow())
	if n.up {
		n.w.nodeEvent(n.idx, n.localToVirtual(n.w.cfg.Tick), n.inc, true, n.tick)
	}
}

func (n *Node) receive(m *Msg) {
	env := &minimonv1.PeerEnvelope{FromRank: m.From}
	switch {
	case m.Paxos != nil:
		env.Epoch = m.Paxos.GetEpoch()
		env.Body = &minimonv1.PeerEnvelope_Paxos{Paxos: m.Paxos}
	case m.Election != nil:
		env.Epoch = m.Election.GetEpoch()
		env.Body = &minimonv1.PeerEnvelope_Election{Election: m.Election}
	case m.Probe != nil:
		env.Body = &minimonv1.PeerEnvelope_Probe{Probe: m.Probe}
	}
	n.nd.Step(n.LocalNow(), env)
}

// fullSync models Ceph's full sync, omnisciently and at once: copy the provider's store and
// rebuild the cores on it. Promises never go back (node.PreservePromises).
func (n *Node) fullSync(from int) {
	w := n.w
	now := n.LocalNow()
	p := w.nodes[from]
	if !p.up || p.paused || !w.Connected(n.idx, p.idx) {
		w.tracef("node %d full sync from %d failed", n.idx, from)
		n.nd.SyncFailed(now)
		return
	}
	w.tracef("node %d full sync from %d", n.idx, p.idx)
	ns := p.store.Clone()
	keep, err := node.PreservePromises(n.store, ns)
	if err == nil {
		err = ns.Apply(keep)
	}
	if err != nil {
		w.Checker.Violation("node %d sync: %v", n.idx, err)
		return
	}
	n.store = ns
	n.syncs++
	n.observeStore()
	if err := n.nd.SyncDone(now); err != nil {
		w.Checker.Violation("node %d rebuild after sync: %v", n.idx, err)
	}
}

// ---- clients ----

func (n *Node) clientRequest(op *clientOp) {
	now := n.LocalNow()
	switch op.in.Kind {
	case OpGet:
		if !n.nd.Readable(now) {
			op.c.reply(op, OpOutput{}, false)
			return
		}
		v, err := n.store.Get(clientBucket, []byte(op.in.Key))
		if err != nil {
			op.c.reply(op, OpOutput{}, false)
			return
		}
		op.c.reply(op, OpOutput{Value: string(v), Version: n.nd.Paxos().LastCommitted()}, true)
	case OpPut:
		err := n.nd.Propose(now, encodePut(op.in.Key, op.in.Value), func(r paxos.Result) {
			if r.Err == nil {
				op.c.reply(op, OpOutput{Version: r.Version}, true)
				return
			}
			// Any error after Propose accepted the value (ErrStepDown or other) leaves the
			// outcome unknown: the value may have reached a peon and commit later.
			op.c.reply(op, OpOutput{Unknown: true}, false)
		})
		if err != nil {
			op.c.reply(op, OpOutput{}, false)
		}
	}
}
