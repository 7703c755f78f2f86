package sim

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// Role is a node's monitor state.
type Role int

// Roles (ceph-mon-spec.md 1.1, without synchronizing: a full sync is instantaneous here).
const (
	Down Role = iota
	Probing
	Electing
	Leader
	Peon
)

func (r Role) String() string {
	return [...]string{"down", "probing", "electing", "leader", "peon"}[r]
}

// Node is one simulated monitor: the store survives crashes, everything else is memory.
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

	px   *paxos.Paxos
	el   *election.Elector
	role Role

	epoch  uint64
	leader int32
	quorum []int32

	pxBusy, elBusy bool
	writes         []*write // in flight, in issue order
	lastWriteAt    time.Duration

	proposals map[paxos.ProposalID]*clientOp
	nextProbe time.Duration // virtual
	lastAdmit time.Duration // virtual, -inf at start
	syncs     int

	// deferred holds paxos messages that arrived while an election Ready (its epoch write) was
	// in flight: the outcome that makes them acceptable is acted on only after that write, so
	// they wait for it, as in Ceph where the epoch write blocks the event loop.
	deferred []*Msg

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
	return n.role
}

// Epoch is the election epoch of the node's current quorum.
func (n *Node) Epoch() uint64 { return n.epoch }

// Paxos exposes the node's paxos instance (nil while down).
func (n *Node) Paxos() *paxos.Paxos { return n.px }

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

// start builds the cores from the store (first start and every restart).
func (n *Node) start() error {
	w := n.w
	n.inc++
	now := n.LocalNow()
	stored, err := election.LoadEpoch(n.store)
	if err != nil {
		return err
	}
	pcfg := PaxosConfig(w.cfg, n.idx, n.members(), w.rng.Uint64()|1)
	if err := pcfg.Validate(); err != nil {
		return fmt.Errorf("paxos config: %w", err)
	}
	px, err := paxos.New(pcfg, n.store, now, stored < 2)
	if err != nil {
		return err
	}
	el, err := election.New(election.Config{
		Rank: n.rank, Members: n.members(), ElectionTimeout: w.cfg.ElectionTimeout,
		LeaseAckTimeout: w.cfg.LeaseAckTimeout, RenewInterval: w.cfg.RenewInterval,
		ClockRateError: w.cfg.ClockRateError, MonmapEpoch: 1,
		Rand: rand.New(rand.NewPCG(w.rng.Uint64(), w.rng.Uint64())),
	}, n.store, now)
	if err != nil {
		return err
	}
	n.px, n.el = px, el
	n.up, n.paused = true, false
	n.role = Probing
	n.epoch, n.leader, n.quorum = 0, -1, nil
	n.pxBusy, n.elBusy = false, false
	n.writes, n.lastWriteAt, n.deferred = nil, 0, nil
	n.proposals = map[paxos.ProposalID]*clientOp{}
	n.nextProbe = w.clk.now
	n.lastAdmit = -time.Hour
	n.observeStore()
	w.tracef("node %d start inc %d lc %d epoch %d", n.idx, n.inc, px.LastCommitted(), stored)
	n.el.SetHorizon(n.px.Horizon())
	inc := n.inc
	w.nodeEvent(n.idx, n.localToVirtual(time.Duration(w.rng.Int64N(int64(w.cfg.Tick)))), inc, true, n.tick)
	n.drive()
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
	n.failProposals()
	n.up, n.paused = false, false
	n.pausedQ, n.pausedTick = nil, nil
	n.writes, n.proposals, n.deferred = nil, nil, nil
	n.px, n.el = nil, nil
	n.inc++ // pending timers and writes of the old incarnation die with it
}

func (n *Node) restart() error {
	n.w.tracef("restart %d", n.idx)
	return n.start()
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

// ---- the monitor glue ----

func (n *Node) send(pm []*minimonv1.PaxosMessage) {
	for _, m := range pm {
		n.w.send(&Msg{From: n.rank, To: m.GetTo(), Paxos: m})
	}
}

func (n *Node) sendElection(em []*minimonv1.ElectionMessage) {
	for _, m := range em {
		n.w.send(&Msg{From: n.rank, To: m.GetTo(), Election: m})
	}
}

// drive executes whatever the cores ask for, until neither has anything new.
func (n *Node) drive() {
	for n.up {
		progressed := false
		if !n.elBusy && n.el.HasReady() {
			n.electionReady()
			progressed = true
		}
		if n.up && n.px.HasReady() {
			if n.pxBusy {
				// While a Ready is outstanding paxos hands out only a bootstrap request.
				if rd := n.px.Ready(); rd.Bootstrap != "" {
					n.bootstrap("paxos: " + rd.Bootstrap)
				}
			} else {
				n.paxosReady()
			}
			progressed = true
		}
		if !progressed {
			return
		}
	}
}

func (n *Node) paxosReady() {
	rd := n.px.Ready()
	n.pxBusy = true
	n.send(rd.Parallel)
	inc := n.inc
	finish := func() {
		if n.inc != inc {
			return
		}
		n.send(rd.Messages)
		for _, e := range rd.Committed {
			n.w.Checker.Commit(n.idx, e.Version, e.Value)
			n.w.stats.Commits++
		}
		for _, r := range rd.Done {
			n.complete(r)
		}
		n.px.Advance(n.LocalNow(), rd)
		n.pxBusy = false
		n.el.SetHorizon(n.px.Horizon())
		if rd.Bootstrap != "" {
			n.bootstrap("paxos: " + rd.Bootstrap)
		}
		n.drive()
	}
	if rd.Persist != nil {
		n.persist(rd.Persist, finish)
		return
	}
	finish()
}

func (n *Node) electionReady() {
	rd := n.el.Ready()
	n.elBusy = true
	inc := n.inc
	finish := func() {
		if n.inc != inc {
			return
		}
		now := n.LocalNow()
		if rd.Electing {
			n.leaveQuorum(Electing)
		}
		n.sendElection(rd.Messages)
		if o := rd.Outcome; o != nil {
			n.w.stats.Elections++
			n.epoch, n.leader, n.quorum = o.Epoch, o.Leader, o.Quorum
			if o.Won {
				n.w.Checker.Leader(o.Epoch, n.rank)
				n.role = Leader
				n.px.Leader(now, o.Epoch, o.Quorum, o.ReleaseAt)
			} else {
				n.w.Checker.Leader(o.Epoch, o.Leader)
				n.role = Peon
				n.px.Peon(now, o.Epoch, o.Leader, o.Quorum)
			}
			n.el.SetQuorum(o.Epoch, o.Leader, o.Quorum)
			n.w.tracef("node %d %v epoch %d quorum %v", n.idx, n.role, o.Epoch, o.Quorum)
		}
		if len(rd.Outsiders) > 0 && n.role == Leader &&
			n.w.clk.now-n.lastAdmit >= 2*n.w.cfg.ElectionTimeout {
			var minEpoch uint64
			for _, o := range rd.Outsiders {
				minEpoch = max(minEpoch, o.Epoch)
			}
			n.lastAdmit = n.w.clk.now
			n.w.tracef("node %d admits %v", n.idx, rd.Outsiders)
			n.el.Advance(rd)
			n.elBusy = false
			n.el.StartElection(now, minEpoch)
			n.replayDeferred()
			n.drive()
			return
		}
		n.el.Advance(rd)
		n.elBusy = false
		n.replayDeferred()
		n.drive()
	}
	if rd.Persist != nil {
		n.persist(rd.Persist, finish)
		return
	}
	finish()
}

func (n *Node) replayDeferred() {
	for len(n.deferred) > 0 && n.up && !n.elBusy {
		m := n.deferred[0]
		n.deferred = n.deferred[1:]
		n.receive(m)
	}
}

// leaveQuorum drops leader/peon: the lease goes at once (rule 3), the round is abandoned.
func (n *Node) leaveQuorum(to Role) {
	if n.role == Leader || n.role == Peon {
		n.w.tracef("node %d leaves %v (epoch %d) -> %v", n.idx, n.role, n.epoch, to)
	}
	n.px.Restart(n.LocalNow())
	n.role = to
}

// bootstrap goes back to probing (paxos asked, or the lease timed out).
func (n *Node) bootstrap(why string) {
	n.w.tracef("node %d bootstrap: %s", n.idx, why)
	n.leaveQuorum(Probing)
	n.el.SetQuorum(0, -1, nil)
	n.nextProbe = n.w.clk.now
}

func (n *Node) tick() {
	w := n.w
	now := n.LocalNow()
	n.px.Tick(now)
	n.el.Tick(now)
	if n.role != Leader && n.role != Peon && w.clk.now >= n.nextProbe {
		n.nextProbe = w.clk.now + n.localToVirtual(w.cfg.ProbeInterval)
		// The elector retries its pre-vote by itself; poke it only when it is idle.
		if !n.maybeFullSync() && n.el.State() == "idle" {
			n.el.SetLastCommitted(n.px.LastCommitted())
			n.el.CallPreVote(now)
		}
	}
	n.drive()
	if n.up {
		w.nodeEvent(n.idx, n.localToVirtual(w.cfg.Tick), n.inc, true, n.tick)
	}
}

func (n *Node) receive(m *Msg) {
	if m.Paxos != nil && n.elBusy {
		n.deferred = append(n.deferred, m)
		return
	}
	now := n.LocalNow()
	if m.Paxos != nil {
		if (n.role == Peon) && m.From == n.leader && m.Paxos.GetEpoch() == n.epoch {
			n.el.NoteLeaderContact(now)
		}
		n.px.Step(now, m.Paxos)
	} else {
		n.el.Step(now, m.Election)
	}
	n.drive()
}

// maybeFullSync models Ceph's full sync: when probing shows a reachable peer whose
// first_committed is above our last_committed, copy its store (instantly) and restart the cores
// on it. Promises never go back: our own accepted/last pn and election epoch are kept when
// higher.
func (n *Node) maybeFullSync() bool {
	if len(n.writes) > 0 || n.pxBusy || n.elBusy {
		return false
	}
	lc := n.px.LastCommitted()
	for _, p := range n.w.nodes {
		if p == n || !p.up || p.paused || !n.w.Connected(n.idx, p.idx) {
			continue
		}
		pfc := p.storedU64(paxos.KeyFirstCommitted)
		if pfc > 1 && lc < pfc {
			n.fullSync(p)
			return true
		}
	}
	return false
}

func (n *Node) fullSync(p *Node) {
	n.w.tracef("node %d full sync from %d", n.idx, p.idx)
	old := n.store
	ns := p.store.Clone()
	keep := &minimonv1.Transaction{}
	for _, k := range []struct{ b, k string }{
		{paxos.Bucket, paxos.KeyLastPN}, {paxos.Bucket, paxos.KeyAcceptedPN}, {election.Bucket, election.KeyEpoch},
	} {
		mine, _ := old.Get(k.b, []byte(k.k))
		theirs, _ := ns.Get(k.b, []byte(k.k))
		if len(mine) == 8 && (len(theirs) != 8 || binary.BigEndian.Uint64(mine) > binary.BigEndian.Uint64(theirs)) {
			keep.Ops = append(keep.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: k.b, Key: []byte(k.k), Value: mine})
		}
	}
	if err := ns.Apply(keep); err != nil {
		n.w.Checker.Violation("node %d sync: %v", n.idx, err)
		return
	}
	n.failProposals()
	n.store = ns
	n.syncs++
	if err := n.start(); err != nil {
		n.w.Checker.Violation("node %d restart after sync: %v", n.idx, err)
	}
}

// ---- clients ----

func (n *Node) clientRequest(op *clientOp) {
	now := n.LocalNow()
	switch op.in.Kind {
	case OpGet:
		if !n.px.Readable(now) {
			op.c.reply(op, OpOutput{}, false)
			return
		}
		v, err := n.store.Get(clientBucket, []byte(op.in.Key))
		if err != nil {
			op.c.reply(op, OpOutput{}, false)
			return
		}
		op.c.reply(op, OpOutput{Value: string(v), Version: n.px.LastCommitted()}, true)
	case OpPut:
		id, err := n.px.Propose(now, encodePut(op.in.Key, op.in.Value))
		if err != nil {
			op.c.reply(op, OpOutput{}, false)
			return
		}
		n.proposals[id] = op
		n.drive()
	}
}

func (n *Node) complete(r paxos.Result) {
	op, ok := n.proposals[r.ID]
	if !ok {
		return
	}
	delete(n.proposals, r.ID)
	if r.Err == nil {
		op.c.reply(op, OpOutput{Version: r.Version}, true)
		return
	}
	// Any error after Propose accepted the value (ErrStepDown or other) leaves the outcome
	// unknown: the value may have reached a peon and commit later.
	op.c.reply(op, OpOutput{Unknown: true}, false)
}

// failProposals answers every pending proposal as unknown, in proposal order (map order would
// make the run depend on Go's map iteration).
func (n *Node) failProposals() {
	ids := make([]paxos.ProposalID, 0, len(n.proposals))
	for id := range n.proposals {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		op := n.proposals[id]
		op.c.reply(op, OpOutput{Unknown: true}, false)
	}
}
