// Package node is the monitor's own protocol logic (ceph-mon-spec.md sections 1-2, design.md
// 4a): it wires one elector and one paxos instance together and decides the monitor state
// (probing, synchronizing, electing, leader, peon). The daemon (internal/monitor) and the
// simulator (internal/sim) both drive a *Node, so the simulator tests the daemon's real logic.
//
// Like paxos and election it is pure: no goroutines, no clock, no randomness of its own. The
// driver calls Start, Step, Tick, Propose, SyncDone and Stop from one goroutine (the event loop),
// passing a monotonic `now`, and implements Env: store writes (completing asynchronously, in
// issue order), message sends and full store syncs.
//
// Order of execution (the contract the simulator checks):
//   - paxos Ready: Parallel is sent at once; Persist is issued; only after it is durable are
//     Messages sent, Committed handed to OnCommit, Done completed and the Ready Advanced. One
//     paxos Ready is outstanding at a time.
//   - election Ready: Persist (the epoch) is durable before anything else; then the monitor
//     leaves leader/peon if Electing, sends Messages, acts on the Outcome, considers Outsiders
//     for admission (leader only, at most one admission election per AdmitInterval), Advances.
//   - a paxos message arriving while an election Ready is outstanding waits for it (the outcome
//     that makes its epoch acceptable is acted on only after the epoch write), then is handled.
package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/election"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// Role is the monitor state (ceph-mon-spec.md 1.1).
type Role int

// Roles. Down is the zero value, for drivers that model a stopped monitor (the simulator).
const (
	Down Role = iota
	Probing
	Synchronizing
	Electing
	Leader
	Peon
)

func (r Role) String() string {
	switch r {
	case Down:
		return "down"
	case Probing:
		return "probing"
	case Synchronizing:
		return "synchronizing"
	case Electing:
		return "electing"
	case Leader:
		return "leader"
	case Peon:
		return "peon"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// InQuorum reports whether r is leader or peon.
func (r Role) InQuorum() bool { return r == Leader || r == Peon }

// Config configures a Node.
type Config struct {
	Rank        int32
	Members     []int32 // ranks of the member map
	MonmapEpoch uint64

	// Paxos and Election: Rank and Members (and MonmapEpoch, and Logger when nil) are filled by
	// New from the fields above; the caller sets Paxos.Incarnation.
	Paxos    paxos.Config
	Election election.Config

	// ProbeTimeout is the probe and pre-vote interval while not in a quorum (mon_probe_timeout);
	// 0 means Election.ElectionTimeout.
	ProbeTimeout time.Duration
	// AdmitInterval is the minimum gap between admission elections; 0 means 2*ElectionTimeout.
	AdmitInterval time.Duration
	// NewIncarnation draws the paxos incarnation for a rebuild after a full sync (the message
	// sequence starts again, so peers must see a new incarnation, rule 1). Nil: the previous
	// incarnation + 2 (still odd, hence non-zero, when the caller's is).
	NewIncarnation func() uint64
	// Clock reads the monotonic clock when a store write completes (its `now` stamps the sends
	// that follow and the horizon, rule 6). Nil: time.Now (monotonic reading).
	Clock func() time.Time

	Logger paxos.Logger
}

// Env is what the driver does for the node.
type Env interface {
	// Persist makes tx durable; writes complete in issue order; done is called by the driver on
	// the goroutine that owns the Node (the event loop), after the write is durable.
	Persist(tx *minimonv1.Transaction, done func())
	// Send hands a peer message to the transport; best effort, never blocks. The node fills
	// FromRank, Epoch and the body; the driver fills Fsid and FromName.
	Send(to int32, env *minimonv1.PeerEnvelope)
	// Sync asks the driver for a full store sync from member `from` (its first_committed is past
	// our last_committed); the driver later calls SyncDone (or SyncFailed) on the Node. It must
	// not call back into the Node before Sync returns.
	Sync(from int32)
}

// Status is a snapshot for mon_status, metrics and tests.
type Status struct {
	Role Role
	// Epoch, Leader, Quorum: the last quorum this member was part of (the election outcome);
	// current only while Role is Leader or Peon. Leader is -1 before the first outcome.
	Epoch  uint64
	Leader int32
	Quorum []int32
	// ElectionEpoch is the elector's epoch now (odd while electing).
	ElectionEpoch  uint64
	FirstCommitted uint64
	LastCommitted  uint64
	QuorumSince    time.Time // when the last outcome was acted on
	PaxosState     string
	ElectorState   string
	Pending        int // proposals not yet completed
}

// Node is one monitor's protocol logic.
type Node struct {
	cfg Config
	st  kvstore.Store
	env Env
	log paxos.Logger

	px *paxos.Paxos
	el *election.Elector

	role        Role
	epoch       uint64
	leader      int32
	quorum      []int32
	quorumSince time.Time

	pxBusy, elBusy bool // a Ready is outstanding (its write in flight)
	inflight       int  // Persist calls not yet done
	gen            uint64
	stopped        bool

	proposals map[paxos.ProposalID]func(paxos.Result)
	nextProbe time.Time
	lastAdmit time.Time
	admitted  bool // lastAdmit is set

	// deferred holds paxos messages that arrived while an election Ready (its epoch write) was
	// in flight: the outcome that makes them acceptable is acted on only after that write, so
	// they wait for it, as in Ceph where the epoch write blocks the event loop.
	deferred []*minimonv1.PeerEnvelope

	onCommit     func([]paxos.Entry)
	onRoleChange func(old, new Role, why string)
	onOutcome    func(election.Outcome)
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}

// New builds the elector and paxos from the store. freshCluster (paxos rule 6) is a stored
// election epoch < 2.
func New(cfg Config, st kvstore.Store, env Env, now time.Time) (*Node, error) {
	if st == nil || env == nil {
		return nil, errors.New("node: nil store or env")
	}
	if !slices.Contains(cfg.Members, cfg.Rank) {
		return nil, fmt.Errorf("node: own rank %d not in members %v", cfg.Rank, cfg.Members)
	}
	cfg.Members = slices.Clone(cfg.Members)
	cfg.Paxos.Rank, cfg.Paxos.Members = cfg.Rank, cfg.Members
	cfg.Election.Rank, cfg.Election.Members = cfg.Rank, cfg.Members
	if cfg.MonmapEpoch != 0 {
		cfg.Election.MonmapEpoch = cfg.MonmapEpoch
	}
	if cfg.Paxos.Logger == nil && cfg.Logger != nil {
		cfg.Paxos.Logger = cfg.Logger
	}
	if cfg.Election.Logger == nil && cfg.Logger != nil {
		cfg.Election.Logger = cfg.Logger
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = cfg.Election.ElectionTimeout
	}
	if cfg.AdmitInterval <= 0 {
		cfg.AdmitInterval = 2 * cfg.Election.ElectionTimeout
	}
	if err := cfg.Paxos.Validate(); err != nil {
		return nil, fmt.Errorf("node: paxos config: %w", err)
	}
	if err := cfg.Election.Validate(); err != nil {
		return nil, fmt.Errorf("node: election config: %w", err)
	}
	n := &Node{cfg: cfg, st: st, env: env, log: cfg.Logger, leader: -1,
		proposals: map[paxos.ProposalID]func(paxos.Result){}}
	if n.log == nil {
		n.log = nopLogger{}
	}
	stored, err := election.LoadEpoch(st)
	if err != nil {
		return nil, err
	}
	if err := n.build(now, stored < 2); err != nil {
		return nil, err
	}
	return n, nil
}

// build (re)creates the cores from the store.
func (n *Node) build(now time.Time, freshCluster bool) error {
	px, err := paxos.New(n.cfg.Paxos, n.st, now, freshCluster)
	if err != nil {
		return err
	}
	el, err := election.New(n.cfg.Election, n.st, now)
	if err != nil {
		return err
	}
	n.px, n.el = px, el
	return nil
}

// OnCommit sets the function called after each durable commit (services refresh).
func (n *Node) OnCommit(fn func([]paxos.Entry)) { n.onCommit = fn }

// OnRoleChange sets the function called on every change of Role.
func (n *Node) OnRoleChange(fn func(old, new Role, why string)) { n.onRoleChange = fn }

// OnOutcome sets the function called on every election outcome this member acts on (also when
// its role does not change), after paxos was made leader or peon.
func (n *Node) OnOutcome(fn func(election.Outcome)) { n.onOutcome = fn }

// Paxos exposes the paxos core for inspection (tests, metrics); the driver must not drive it.
func (n *Node) Paxos() *paxos.Paxos { return n.px }

// Elector exposes the elector for inspection; the driver must not drive it.
func (n *Node) Elector() *election.Elector { return n.el }

// Role is the current monitor state.
func (n *Node) Role() Role { return n.role }

// Status returns a snapshot.
func (n *Node) Status() Status {
	return Status{
		Role: n.role, Epoch: n.epoch, Leader: n.leader, Quorum: slices.Clone(n.quorum),
		ElectionEpoch: n.el.Epoch(), FirstCommitted: n.px.FirstCommitted(),
		LastCommitted: n.px.LastCommitted(), QuorumSince: n.quorumSince,
		PaxosState: n.px.State(), ElectorState: n.el.State(), Pending: len(n.proposals),
	}
}

func (n *Node) setRole(to Role, why string) {
	old := n.role
	n.role = to
	if old != to && n.onRoleChange != nil {
		n.onRoleChange(old, to, why)
	}
}

// Start begins probing.
func (n *Node) Start(now time.Time) {
	if n.stopped {
		return
	}
	n.el.SetHorizon(n.px.Horizon())
	n.setRole(Probing, "start")
	n.nextProbe = now
	n.drive(now)
}

// Stop fails every pending proposal with ErrStepDown (in proposal order) and ignores any later
// call; writes still in flight complete into nothing.
func (n *Node) Stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	n.gen++
	n.deferred = nil
	n.failProposals()
}

func (n *Node) failProposals() {
	ids := make([]paxos.ProposalID, 0, len(n.proposals))
	for id := range n.proposals {
		ids = append(ids, id)
	}
	slices.Sort(ids) // never map order: the simulator must stay deterministic
	for _, id := range ids {
		done := n.proposals[id]
		delete(n.proposals, id)
		done(paxos.Result{ID: id, Err: paxos.ErrStepDown})
	}
}

// Propose hands an encoded transaction to paxos; done is called once with its result.
func (n *Node) Propose(now time.Time, tx []byte, done func(paxos.Result)) error {
	if n.stopped || n.role != Leader {
		return paxos.ErrNotLeader
	}
	id, err := n.px.Propose(now, tx)
	if err != nil {
		return err
	}
	n.proposals[id] = done
	n.drive(now)
	return nil
}

// Readable reports whether a read may be served now (rule 4).
func (n *Node) Readable(now time.Time) bool {
	return !n.stopped && n.role.InQuorum() && n.px.Readable(now)
}

// ---- events ----

// Tick drives the timers; the driver calls it every few milliseconds.
func (n *Node) Tick(now time.Time) {
	if n.stopped || n.role == Synchronizing {
		return
	}
	n.px.Tick(now)
	n.el.Tick(now)
	if !n.role.InQuorum() && !now.Before(n.nextProbe) {
		n.nextProbe = now.Add(n.cfg.ProbeTimeout)
		n.probe()
		// The elector retries its pre-vote by itself; poke it only when it is idle.
		if n.el.State() == "idle" {
			n.el.SetLastCommitted(n.px.LastCommitted())
			n.el.CallPreVote(now)
		}
	}
	n.drive(now)
}

// Step handles one peer message.
func (n *Node) Step(now time.Time, m *minimonv1.PeerEnvelope) {
	if n.stopped || m == nil {
		return
	}
	n.handle(now, m)
	n.drive(now)
}

func (n *Node) handle(now time.Time, m *minimonv1.PeerEnvelope) {
	from := m.GetFromRank()
	if from == n.cfg.Rank || !slices.Contains(n.cfg.Members, from) {
		n.log.Debug("node: message from a non-member dropped", "from", from)
		return
	}
	switch {
	case m.GetPaxos() != nil:
		if n.role == Synchronizing {
			return // the store is being replaced under the cores
		}
		if n.elBusy || n.el.HasReady() {
			// An election outcome not yet acted on may be what makes this message's epoch ours.
			n.deferred = append(n.deferred, m)
			return
		}
		pm := m.GetPaxos()
		if n.role == Peon && from == n.leader && pm.GetEpoch() == n.epoch {
			n.el.NoteLeaderContact(now)
		}
		n.px.Step(now, pm)
	case m.GetElection() != nil:
		if n.role == Synchronizing {
			return
		}
		n.el.Step(now, m.GetElection())
	case m.GetProbe() != nil:
		n.handleProbe(now, from, m.GetProbe())
	}
}

// caughtUp keeps the outsiders worth an admission election now: those whose history the
// election's share_state can complete. One whose last_committed is below our first_committed,
// or more than paxos_max_join_drift behind our last_committed, is about to sync (its probes
// tell it so); admitting it first would cost an election it cannot take part in, and a second
// one after its sync.
func (n *Node) caughtUp(os []election.Outsider) []election.Outsider {
	fc, lc, drift := n.px.FirstCommitted(), n.px.LastCommitted(), n.cfg.Paxos.MaxJoinDrift
	var keep []election.Outsider
	for _, o := range os {
		if o.LastCommitted+1 < fc || (drift > 0 && o.LastCommitted+drift < lc) {
			n.log.Debug("node: outsider not caught up; admission waits for its sync", "rank", o.Rank,
				"its_lc", o.LastCommitted, "fc", fc, "lc", lc)
			continue
		}
		keep = append(keep, o)
	}
	return keep
}

// ---- probing and sync (ceph-mon-spec.md 2.3, 2.4 step 4) ----

func (n *Node) probeMsg(op minimonv1.ProbeMessage_Op) *minimonv1.ProbeMessage {
	p := &minimonv1.ProbeMessage{
		Op: op, Rank: n.cfg.Rank, MonmapEpoch: n.cfg.Election.MonmapEpoch,
		FirstCommitted: n.px.FirstCommitted(), LastCommitted: n.px.LastCommitted(),
		ElectionEpoch: n.el.Epoch(),
	}
	if n.role.InQuorum() {
		p.Quorum = slices.Clone(n.quorum)
		p.Leader, p.HasLeader = n.leader, true
	}
	return p
}

func (n *Node) sendProbe(to int32, p *minimonv1.ProbeMessage) {
	n.env.Send(to, &minimonv1.PeerEnvelope{FromRank: n.cfg.Rank, Epoch: n.el.Epoch(),
		Body: &minimonv1.PeerEnvelope_Probe{Probe: p}})
}

// probe sends PROBE (with our fc/lc) to every other member.
func (n *Node) probe() {
	for _, r := range n.cfg.Members {
		if r != n.cfg.Rank {
			n.sendProbe(r, n.probeMsg(minimonv1.ProbeMessage_PROBE))
		}
	}
}

func (n *Node) handleProbe(now time.Time, from int32, p *minimonv1.ProbeMessage) {
	if p.GetOp() == minimonv1.ProbeMessage_PROBE {
		n.sendProbe(from, n.probeMsg(minimonv1.ProbeMessage_REPLY))
	} else if p.GetOp() != minimonv1.ProbeMessage_REPLY {
		return
	}
	n.maybeSync(now, from, p.GetFirstCommitted(), p.GetLastCommitted())
}

// maybeSync starts a full sync from a peer whose history begins after ours ends (spec 2.4 step
// 4: incremental catch-up is impossible) or that is more than paxos_max_join_drift versions
// ahead (catching up through the election's share_state would take too long), only while out
// of quorum and with nothing in flight. Every version the sync overwrites is at or below the
// peer's last_committed, so decided: nothing we accepted and could matter is lost.
func (n *Node) maybeSync(now time.Time, from int32, peerFC, peerLC uint64) {
	if n.role != Probing && n.role != Electing {
		return
	}
	if n.inflight > 0 || n.pxBusy || n.elBusy {
		return
	}
	lc := n.px.LastCommitted()
	var why string
	switch drift := n.cfg.Paxos.MaxJoinDrift; {
	case peerFC > 1 && lc < peerFC:
		why = fmt.Sprintf("full sync from %d (its fc %d > our lc %d)", from, peerFC, lc)
	case drift > 0 && peerLC > lc+drift:
		why = fmt.Sprintf("full sync from %d (its lc %d is more than paxos_max_join_drift %d past our lc %d)", from, peerLC, drift, lc)
	default:
		return
	}
	n.log.Info("node: full sync", "from", from, "peer_fc", peerFC, "peer_lc", peerLC, "lc", lc)
	n.leaveQuorum(now, Synchronizing, why)
	n.el.SetQuorum(0, -1, nil)
	n.deferred = nil
	n.env.Sync(from)
}

// SyncDone is called by the driver once a full sync replaced the store: paxos and the elector
// are rebuilt from it (with a new paxos incarnation), the horizon kept, and the node probes
// again. Pending proposals fail with ErrStepDown.
func (n *Node) SyncDone(now time.Time) error {
	if n.stopped {
		return nil
	}
	oldH := n.px.Horizon()
	n.gen++ // completions of writes issued before the sync belong to the old cores
	n.pxBusy, n.elBusy, n.deferred = false, false, nil
	n.failProposals()
	inc := n.cfg.Paxos.Incarnation + 2
	if n.cfg.NewIncarnation != nil {
		inc = n.cfg.NewIncarnation()
	}
	n.cfg.Paxos.Incarnation = inc
	// Not a fresh cluster: the synced store comes from a quorum, so H = now + d*rho, which is
	// at or above the old horizon (every H was a send time, before now, plus d*rho).
	if err := n.build(now, false); err != nil {
		n.setRole(Probing, "sync done, rebuild failed")
		return fmt.Errorf("node: rebuild after sync: %w", err)
	}
	h := n.px.Horizon()
	if oldH.After(h) {
		h = oldH
	}
	n.el.SetHorizon(h)
	n.setRole(Probing, "sync done")
	n.nextProbe = now
	n.drive(now)
	return nil
}

// SyncFailed is called by the driver when a sync it started did not touch the store in the
// end (provider gone): back to probing with the cores as they were.
func (n *Node) SyncFailed(now time.Time) {
	if n.stopped || n.role != Synchronizing {
		return
	}
	n.setRole(Probing, "sync failed")
	n.nextProbe = now
	n.drive(now)
}

// ---- executing Ready batches ----

// nowAfterWrite is the time a write completion is handled: read after the event is in hand.
func (n *Node) nowAfterWrite() time.Time { return n.cfg.Clock() }

func (n *Node) persist(tx *minimonv1.Transaction, done func()) {
	n.inflight++
	gen := n.gen
	n.env.Persist(tx, func() {
		n.inflight--
		if n.stopped || n.gen != gen {
			return
		}
		done()
	})
}

func (n *Node) sendPaxos(ms []*minimonv1.PaxosMessage) {
	for _, m := range ms {
		n.env.Send(m.GetTo(), &minimonv1.PeerEnvelope{FromRank: n.cfg.Rank, Epoch: m.GetEpoch(),
			Body: &minimonv1.PeerEnvelope_Paxos{Paxos: m}})
	}
}

func (n *Node) sendElection(ms []*minimonv1.ElectionMessage) {
	for _, m := range ms {
		n.env.Send(m.GetTo(), &minimonv1.PeerEnvelope{FromRank: n.cfg.Rank, Epoch: m.GetEpoch(),
			Body: &minimonv1.PeerEnvelope_Election{Election: m}})
	}
}

// drive executes whatever the cores ask for, until neither has anything new.
func (n *Node) drive(now time.Time) {
	for !n.stopped {
		progressed := false
		if !n.elBusy && n.el.HasReady() {
			n.electionReady(now)
			progressed = true
		} else if !n.elBusy && len(n.deferred) > 0 {
			// Held paxos messages go in only once every election Ready is acted on.
			m := n.deferred[0]
			n.deferred = n.deferred[1:]
			n.handle(now, m)
			progressed = true
		}
		if !n.stopped && n.px.HasReady() {
			if n.pxBusy {
				// While a Ready is outstanding paxos hands out only a bootstrap request.
				if rd := n.px.Ready(); rd.Bootstrap != "" {
					n.bootstrap(now, "paxos: "+rd.Bootstrap)
				}
			} else {
				n.paxosReady(now)
			}
			progressed = true
		}
		if !progressed {
			return
		}
	}
}

func (n *Node) paxosReady(now time.Time) {
	rd := n.px.Ready()
	n.pxBusy = true
	n.sendPaxos(rd.Parallel)
	finish := func(now time.Time) {
		n.sendPaxos(rd.Messages)
		if len(rd.Committed) > 0 && n.onCommit != nil {
			n.onCommit(rd.Committed)
		}
		for _, r := range rd.Done {
			n.complete(r)
		}
		if n.stopped {
			return
		}
		n.px.Advance(now, rd)
		n.pxBusy = false
		n.el.SetHorizon(n.px.Horizon())
		if rd.Bootstrap != "" {
			n.bootstrap(now, "paxos: "+rd.Bootstrap)
		}
		n.drive(now)
	}
	if rd.Persist != nil {
		n.persist(rd.Persist, func() { finish(n.nowAfterWrite()) })
		return
	}
	finish(now)
}

func (n *Node) complete(r paxos.Result) {
	done, ok := n.proposals[r.ID]
	if !ok {
		return
	}
	delete(n.proposals, r.ID)
	done(r)
}

func (n *Node) electionReady(now time.Time) {
	rd := n.el.Ready()
	n.elBusy = true
	finish := func(now time.Time) {
		if rd.Electing {
			n.leaveQuorum(now, Electing, "election")
		}
		n.sendElection(rd.Messages)
		if n.stopped {
			return
		}
		if o := rd.Outcome; o != nil {
			n.epoch, n.leader, n.quorum = o.Epoch, o.Leader, slices.Clone(o.Quorum)
			n.quorumSince = now
			if o.Won {
				n.px.Leader(now, o.Epoch, o.Quorum, o.ReleaseAt)
				n.setRole(Leader, fmt.Sprintf("won epoch %d, quorum %v", o.Epoch, o.Quorum))
			} else {
				n.px.Peon(now, o.Epoch, o.Leader, o.Quorum)
				n.setRole(Peon, fmt.Sprintf("epoch %d under %d, quorum %v", o.Epoch, o.Leader, o.Quorum))
			}
			n.el.SetQuorum(o.Epoch, o.Leader, o.Quorum)
			if n.onOutcome != nil {
				n.onOutcome(*o)
			}
		}
		outsiders := n.caughtUp(rd.Outsiders)
		admit := len(outsiders) > 0 && n.role == Leader &&
			(!n.admitted || now.Sub(n.lastAdmit) >= n.cfg.AdmitInterval)
		n.el.Advance(rd)
		n.elBusy = false
		if admit {
			var minEpoch uint64
			for _, o := range outsiders {
				minEpoch = max(minEpoch, o.Epoch)
			}
			n.lastAdmit, n.admitted = now, true
			n.log.Info("node: admission election", "outsiders", outsiders, "above", minEpoch)
			n.el.StartElection(now, minEpoch)
		}
		n.drive(now)
	}
	if rd.Persist != nil {
		n.persist(rd.Persist, func() { finish(n.nowAfterWrite()) })
		return
	}
	finish(now)
}

// leaveQuorum drops leader/peon: the lease goes at once (rule 3), the round is abandoned.
func (n *Node) leaveQuorum(now time.Time, to Role, why string) {
	n.px.Restart(now)
	n.setRole(to, why)
}

// bootstrap goes back to probing (paxos asked, or the lease timed out).
func (n *Node) bootstrap(now time.Time, why string) {
	n.log.Info("node: bootstrap", "why", why)
	n.leaveQuorum(now, Probing, "bootstrap: "+why)
	n.el.SetQuorum(0, -1, nil)
	n.nextProbe = now
}

// PreservePromises returns the transaction that keeps, on a store copied from a sync provider
// (theirs), our own promises where they are higher (last_pn, accepted_pn, election epoch):
// promises never go back. Apply it to the synced store before SyncDone.
func PreservePromises(mine, theirs paxos.Store) (*minimonv1.Transaction, error) {
	keep := &minimonv1.Transaction{}
	for _, k := range []struct{ b, k string }{
		{paxos.Bucket, paxos.KeyLastPN}, {paxos.Bucket, paxos.KeyAcceptedPN}, {election.Bucket, election.KeyEpoch},
	} {
		my, err := mine.Get(k.b, []byte(k.k))
		if err != nil {
			return nil, err
		}
		th, err := theirs.Get(k.b, []byte(k.k))
		if err != nil {
			return nil, err
		}
		if len(my) == 8 && (len(th) != 8 || binary.BigEndian.Uint64(my) > binary.BigEndian.Uint64(th)) {
			keep.Ops = append(keep.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: k.b, Key: []byte(k.k), Value: slices.Clone(my)})
		}
	}
	return keep, nil
}
