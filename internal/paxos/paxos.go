package paxos

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

type role int

const (
	roleNone role = iota
	roleLeader
	rolePeon
)

// phase is Ceph's paxos state (spec 5.5), reduced to what the core needs.
type phase int

const (
	phRecovering       phase = iota // collect/last in progress (leader) or waiting (peon)
	phActive                        // idle
	phUpdating                      // a value is in flight
	phUpdatingPrevious              // re-proposing a value recovered by collect
	phWriting                       // leader: commit condition reached, commit not yet durable
)

func (ph phase) String() string {
	return [...]string{"recovering", "active", "updating", "updating-previous", "writing"}[ph]
}

type msgOp = minimonv1.PaxosMessage_Op

type proposal struct {
	id  ProposalID
	ops []*minimonv1.StoreOp
}

// peerMsg is the newest message a peon sent the leader that a LEASE may name (rule 3).
type peerMsg struct {
	seq  uint64
	op   msgOp
	lc   uint64
	pn   uint64
	used bool // each message backs at most one grant
}

// leaseRound is one lease round k of rule 2 (COLLECT or LEASE), sent at t.
type leaseRound struct {
	k    uint64
	t    time.Time
	acks map[int32]bool
	done bool
}

type sentMsg struct {
	seq uint64
	at  time.Time
}

type seenKey struct {
	from int32
	inc  uint64
}

// effects of a Ready that take hold only when the shell calls Advance (its writes are durable).
type effects struct {
	since         time.Time // when the first write of the batch was issued
	hasPersist    bool
	selfPromisePN uint64
	acceptPN      uint64
	acceptV       uint64
	commitV       uint64
}

type outstanding struct {
	effects
	id  uint64
	gen uint64
	lc  uint64 // last_committed once this batch is durable
}

type overlayVal struct {
	val   []byte
	ready uint64
}

// Paxos is one Ceph-style Paxos instance; see the package doc. It is not safe for concurrent
// use: one goroutine (the monitor's event loop, or the simulator) owns it.
type Paxos struct {
	cfg Config
	st  Store
	log Logger
	rho float64

	// Persisted state, as issued: the write may still be in an outstanding Ready, which is
	// safe because store writes apply in issue order and reads go through the overlay.
	fc, lc, lastPN, acceptedPN, pendingV, pendingPN uint64
	durableLC                                       uint64 // lc the store holds for sure (reads come from it)
	overlay                                         map[uint64]overlayVal

	seq     uint64    // last seq this process sent
	horizon time.Time // H of rule 6

	role     role
	gen      uint64 // bumped at every role change; stale Advance effects are dropped
	stopped  bool   // asked for bootstrap; waits for Restart/Leader/Peon
	epoch    uint64
	leader   int32
	quorum   []int32
	ph       phase
	lastSeen map[seenKey]uint64
	dL       time.Duration // the leader's mon_lease, learnt from its messages
	contact  time.Time     // last message from the current leader (peon), LastLeaderContact

	// peon
	leaseEnd time.Time
	sent     []sentMsg

	// leader
	releaseAt    time.Time
	collectStart time.Time
	// collectRound and collectResend let the leader repeat COLLECT to members that have not
	// promised yet: a COLLECT that overtook the VICTORY, or was lost on a reconnect, would
	// otherwise cost a whole collect timeout and an election.
	collectRound  uint64
	collectResend time.Time
	collectDone   bool
	promised      map[int32]bool
	selfPromised  bool
	peerLC        map[int32]uint64 // lc a peon last reported (or will have once our COMMIT lands)
	sharedTo      map[int32]uint64 // lc up to which catch-up was sent at collect
	uncV, uncPN   uint64
	uncValue      []byte
	rounds        []*leaseRound
	nextRound     uint64
	leaderEnd     time.Time
	lastMajority  time.Time
	nextRenew     time.Time
	grantsOpen    bool // the first round after release has been sent
	lastMsg       map[int32]*peerMsg
	bound         map[int32]time.Time

	inflight     bool
	ifV, ifPN    uint64
	ifValue      []byte
	ifIDs        []ProposalID
	ifTrim       bool
	ifCarry      []byte // value of ifV-1 riding the BEGIN (its commit shares our accept's write)
	accepted     map[int32]bool
	selfAccepted bool
	beginAt      time.Time
	applyPending bool
	lastBeganPN  uint64
	lastBeganV   uint64
	trimming     bool
	queue        []proposal
	nextID       ProposalID

	rd         Ready
	producedAt []time.Time // when each of rd.Messages was produced
	rdFx       effects
	readyID    uint64 // id of the Ready being accumulated
	out        *outstanding
}

// New loads the persisted state. freshCluster means the stored election epoch is below 2: no
// lease of an earlier epoch can be live, so the start-up horizon wait of rule 6 is skipped.
func New(cfg Config, st Store, now time.Time, freshCluster bool) (*Paxos, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Paxos{
		cfg:     cfg,
		st:      st,
		log:     cfg.Logger,
		rho:     1 + cfg.ClockRateError,
		overlay: map[uint64]overlayVal{},
		readyID: 1,
	}
	if p.log == nil {
		p.log = nopLogger{}
	}
	for _, kv := range []struct {
		key string
		dst *uint64
	}{
		{KeyFirstCommitted, &p.fc}, {KeyLastCommitted, &p.lc}, {KeyLastPN, &p.lastPN},
		{KeyAcceptedPN, &p.acceptedPN}, {KeyPendingV, &p.pendingV}, {KeyPendingPN, &p.pendingPN},
	} {
		b, err := st.Get(Bucket, []byte(kv.key))
		if err != nil {
			return nil, fmt.Errorf("paxos: read %s/%s: %w", Bucket, kv.key, err)
		}
		if b != nil {
			if len(b) != 8 {
				return nil, fmt.Errorf("paxos: %s/%s has %d bytes, want 8", Bucket, kv.key, len(b))
			}
			*kv.dst = binary.BigEndian.Uint64(b)
		}
	}
	p.durableLC = p.lc
	if p.fc > p.lc && p.lc != 0 {
		return nil, fmt.Errorf("paxos: store inconsistent: first_committed %d > last_committed %d", p.fc, p.lc)
	}
	if !freshCluster {
		p.horizon = now.Add(p.scaled(cfg.Lease))
	}
	return p, nil
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}

// scaled returns d*rho.
func (p *Paxos) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * p.rho)
}

// U64 encodes an integer value or a version key of the paxos bucket (8-byte big-endian).
func U64(v uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v) }

func putOp(key []byte, val []byte) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: Bucket, Key: key, Value: val}
}

func putU64(key string, v uint64) *minimonv1.StoreOp { return putOp([]byte(key), U64(v)) }

// ---- accessors ----

func (p *Paxos) FirstCommitted() uint64 { return p.fc }
func (p *Paxos) LastCommitted() uint64  { return p.lc }
func (p *Paxos) Epoch() uint64          { return p.epoch }

// Horizon is H of rule 6: no lease this member sent or acked can outlive it.
func (p *Paxos) Horizon() time.Time { return p.horizon }

// LastLeaderContact is when the last message from the current leader was handled (peon), for
// the shell's pre-vote support decision (rule 7).
func (p *Paxos) LastLeaderContact() time.Time { return p.contact }

// State names the paxos state for mon_status and logs: probing (no role), recovering, active,
// updating, updating-previous or writing.
func (p *Paxos) State() string {
	if p.role == roleNone || p.stopped {
		return "probing"
	}
	return p.ph.String()
}

// IsLeader reports whether this instance leads the current epoch.
func (p *Paxos) IsLeader() bool { return p.role == roleLeader && !p.stopped }

// Writeable reports whether Propose will queue a value that goes out without a new election:
// leader, recovery done, not stepping down.
func (p *Paxos) Writeable() bool {
	return p.role == roleLeader && !p.stopped && p.collectDone
}

// Readable implements rule 4.
func (p *Paxos) Readable(now time.Time) bool {
	// A commit whose write is still in flight is not served: reads come from the store.
	if p.stopped || p.pendingV > p.lc || p.durableLC != p.lc {
		return false
	}
	switch p.role {
	case roleLeader:
		return p.collectDone && p.ph != phUpdatingPrevious && !p.applyPending &&
			p.released(now) && now.Before(p.leaderEnd)
	case rolePeon:
		return now.Before(p.leaseEnd)
	}
	return false
}

// LeaseEnd is the end of this member's read lease (leader: its leader lease), for metrics and
// tests.
func (p *Paxos) LeaseEnd() time.Time {
	if p.role == roleLeader {
		return p.leaderEnd
	}
	return p.leaseEnd
}

func (p *Paxos) released(now time.Time) bool {
	return p.role == roleLeader && !now.Before(p.releaseAt)
}

// ---- Ready / Advance ----

// HasReady reports whether Ready has something. While a Ready is outstanding (not yet
// Advanced) only a bootstrap request is handed out.
func (p *Paxos) HasReady() bool {
	if p.out != nil {
		return p.rd.Bootstrap != ""
	}
	return !p.rd.IsEmpty()
}

// Ready hands out the accumulated batch. The shell executes it in the order of the package doc
// and then calls Advance with it.
func (p *Paxos) Ready() Ready {
	if p.out != nil {
		if p.rd.Bootstrap == "" {
			return Ready{}
		}
		rd := Ready{Bootstrap: p.rd.Bootstrap}
		p.rd.Bootstrap = ""
		return rd
	}
	if p.rd.IsEmpty() {
		return Ready{}
	}
	rd := p.rd
	rd.id = p.readyID
	p.stamp(&rd)
	p.out = &outstanding{effects: p.rdFx, id: rd.id, gen: p.gen, lc: p.lc}
	p.rd = Ready{}
	p.rdFx = effects{}
	p.readyID++
	return rd
}

// Advance tells the core that rd was executed: its Persist is durable and its messages were
// handed to the transport. now is read after that.
func (p *Paxos) Advance(now time.Time, rd Ready) {
	if p.out == nil || rd.id != p.out.id {
		if rd.id != 0 {
			p.log.Warn("paxos: Advance of an unknown Ready ignored", "id", rd.id)
		}
		return
	}
	o := p.out
	p.out = nil
	p.durableLC = max(p.durableLC, o.lc)
	for v, ov := range p.overlay {
		if ov.ready <= o.id {
			delete(p.overlay, v)
		}
	}
	// Messages left at or before now: the horizon covers their real send time (rule 6).
	for _, m := range rd.Parallel {
		p.noteSent(now, m.GetOp())
	}
	for _, m := range rd.Messages {
		p.noteSent(now, m.GetOp())
	}
	if o.gen == p.gen && !p.stopped {
		if p.role == roleLeader {
			if o.selfPromisePN != 0 && o.selfPromisePN == p.acceptedPN {
				p.selfPromised = true
			}
			if o.acceptV != 0 && p.inflight && o.acceptV == p.ifV && o.acceptPN == p.ifPN {
				p.selfAccepted = true
			}
			if o.commitV != 0 && p.applyPending && o.commitV == p.lc {
				p.applyPending = false
				if !p.inflight {
					p.ph = phActive
					p.finishRound(now)
				}
			}
		}
	}
	p.progress(now)
}

// noteSent raises H for the messages rule 6 names.
func (p *Paxos) noteSent(now time.Time, op msgOp) {
	var d time.Duration
	switch op {
	case minimonv1.PaxosMessage_COLLECT, minimonv1.PaxosMessage_BEGIN, minimonv1.PaxosMessage_LEASE,
		minimonv1.PaxosMessage_COMMIT:
		d = p.cfg.Lease
	case minimonv1.PaxosMessage_LAST, minimonv1.PaxosMessage_ACCEPT, minimonv1.PaxosMessage_LEASE_ACK:
		d = max(p.cfg.Lease, p.dL)
	default:
		return
	}
	if h := now.Add(p.scaled(d)); h.After(p.horizon) {
		p.horizon = h
	}
}

func (p *Paxos) persist(now time.Time, ops ...*minimonv1.StoreOp) {
	if p.rd.Persist == nil {
		p.rd.Persist = &minimonv1.Transaction{}
	}
	if !p.rdFx.hasPersist {
		p.rdFx.hasPersist = true
		p.rdFx.since = now
	}
	p.rd.Persist.Ops = append(p.rd.Persist.Ops, ops...)
}

// send queues m; parallel messages go out before the batch's write. The seq (rule 1) is
// stamped when the batch is handed out, in send order (Parallel first), so a receiver never
// sees a later seq before an earlier one of the same batch.
func (p *Paxos) send(now time.Time, to int32, m *minimonv1.PaxosMessage, parallel bool) {
	m.From, m.To, m.Epoch, m.Incarnation = p.cfg.Rank, to, p.epoch, p.cfg.Incarnation
	if parallel {
		p.rd.Parallel = append(p.rd.Parallel, m)
	} else {
		p.rd.Messages = append(p.rd.Messages, m)
		p.producedAt = append(p.producedAt, now)
	}
	p.noteSent(now, m.Op)
}

// stamp assigns the seqs of a batch being handed out. A peon remembers when each message was
// produced: a LEASE naming it runs from there (rule 3). The real send is later, so the lease
// comes out shorter, never longer.
func (p *Paxos) stamp(rd *Ready) {
	for _, m := range rd.Parallel {
		p.seq++
		m.Seq = p.seq
	}
	for i, m := range rd.Messages {
		p.seq++
		m.Seq = p.seq
		if p.role != rolePeon || i >= len(p.producedAt) {
			continue
		}
		at := p.producedAt[i]
		cut := at.Add(-2 * max(p.cfg.Lease, p.dL))
		j := 0
		for j < len(p.sent) && (p.sent[j].at.Before(cut) || len(p.sent)-j > 256) {
			j++
		}
		p.sent = append(p.sent[j:], sentMsg{seq: p.seq, at: at})
	}
	p.producedAt = p.producedAt[:0]
}

func (p *Paxos) sentAt(seq uint64) (time.Time, bool) {
	for _, s := range p.sent {
		if s.seq == seq {
			return s.at, true
		}
	}
	return time.Time{}, false
}

func (p *Paxos) done(ids []ProposalID, v uint64, err error) {
	for _, id := range ids {
		p.rd.Done = append(p.rd.Done, Result{ID: id, Version: v, Err: err})
	}
}

// ---- values in the store ----

func (p *Paxos) getValue(v uint64) []byte {
	if ov, ok := p.overlay[v]; ok {
		return ov.val
	}
	b, err := p.st.Get(Bucket, U64(v))
	if err != nil {
		p.log.Warn("paxos: reading a version failed", "v", v, "err", err)
		return nil
	}
	return b
}

func (p *Paxos) setValue(v uint64, val []byte) {
	p.overlay[v] = overlayVal{val: val, ready: p.readyID}
}

// decodeValue decodes and checks a value; nil when it is not a valid transaction.
func decodeValue(val []byte) *minimonv1.Transaction {
	var tx minimonv1.Transaction
	if err := proto.Unmarshal(val, &tx); err != nil {
		return nil
	}
	if kvstore.ValidateTransaction(&tx) != nil {
		return nil
	}
	return &tx
}

// commitVersion writes version v as one transaction (design.md 3): paxos/<v>, the value's ops,
// paxos/last_committed = v. It reports false (and asks for bootstrap) when val is not a value.
func (p *Paxos) commitVersion(now time.Time, v uint64, val []byte) bool {
	tx := decodeValue(val)
	if tx == nil {
		p.bootstrap(fmt.Sprintf("committed version %d does not decode", v))
		return false
	}
	var ops []*minimonv1.StoreOp
	if old := p.getValue(v); !bytes.Equal(old, val) {
		ops = append(ops, putOp(U64(v), val)) // not already there from our accept
	}
	if p.fc == 0 {
		// The very first value also sets first_committed (spec 5.2).
		ops = append(ops, putU64(KeyFirstCommitted, v))
		p.fc = v
	}
	for _, op := range tx.Ops {
		if op.Bucket == Bucket && string(op.Key) == KeyFirstCommitted && op.Kind == minimonv1.StoreOp_PUT &&
			len(op.Value) == 8 {
			p.fc = binary.BigEndian.Uint64(op.Value)
		}
	}
	ops = append(ops, tx.Ops...)
	ops = append(ops, putU64(KeyLastCommitted, v))
	p.persist(now, ops...)
	p.setValue(v, val)
	p.lc = v
	p.rd.Committed = append(p.rd.Committed, Entry{Version: v, Value: val})
	if p.uncV != 0 && p.uncV <= p.lc {
		p.uncV, p.uncPN, p.uncValue = 0, 0, nil
	}
	if p.cfg.EndsEpoch != nil && p.cfg.EndsEpoch(val) {
		p.bootstrap("member map changed")
		return false
	}
	return true
}

// storeState applies committed values in (lc, upTo] starting exactly at lc+1 (spec 5.6.1).
func (p *Paxos) storeState(now time.Time, values map[uint64][]byte, upTo uint64) {
	for v := p.lc + 1; v <= upTo && !p.stopped; v++ {
		val, ok := values[v]
		if !ok {
			return
		}
		if !p.commitVersion(now, v, val) {
			return
		}
	}
}

// shareValues returns the committed values from..lc (share_state, spec 5.6.1).
func (p *Paxos) shareValues(from uint64) map[uint64][]byte {
	vals := map[uint64][]byte{}
	for v := max(from, p.fc, 1); v <= p.lc; v++ {
		if b := p.getValue(v); b != nil {
			vals[v] = b
		}
	}
	return vals
}

// ---- role changes ----

// bootstrap asks the shell to go back to probing, and stops taking part until it does.
func (p *Paxos) bootstrap(reason string) {
	if p.stopped {
		return
	}
	p.log.Info("paxos: asking for bootstrap", "reason", reason, "epoch", p.epoch)
	p.rd.Bootstrap = reason
	p.reset()
	p.stopped = true
}

func (p *Paxos) reset() {
	var ids []ProposalID
	ids = append(ids, p.ifIDs...)
	for _, q := range p.queue {
		ids = append(ids, q.id)
	}
	p.done(ids, 0, ErrStepDown)
	p.gen++
	p.role = roleNone
	p.stopped = false
	p.ph = phRecovering
	p.leaseEnd = time.Time{}
	p.sent = nil
	p.lastSeen = map[seenKey]uint64{}
	p.collectDone, p.selfPromised = false, false
	p.promised, p.peerLC, p.lastMsg, p.bound, p.accepted = nil, nil, nil, nil, nil
	p.uncV, p.uncPN, p.uncValue = 0, 0, nil
	p.rounds, p.leaderEnd, p.lastMajority, p.grantsOpen = nil, time.Time{}, time.Time{}, false
	p.inflight, p.ifV, p.ifPN, p.ifValue, p.ifIDs, p.ifTrim = false, 0, 0, nil, nil, false
	p.ifCarry = nil
	p.selfAccepted, p.applyPending, p.trimming = false, false, false
	p.queue = nil
}

// Restart leaves leader/peon (bootstrap, election): drops the lease, abandons the round
// (proposals complete with ErrStepDown), keeps stored state and H.
func (p *Paxos) Restart(now time.Time) {
	p.reset()
}

// Leader starts an epoch this member won: quorum includes self; releaseAt is the rule 6 release
// computed from the election ACKs. Starts collect (spec 5.6).
func (p *Paxos) Leader(now time.Time, epoch uint64, quorum []int32, releaseAt time.Time) {
	p.reset()
	p.role, p.epoch, p.leader = roleLeader, epoch, p.cfg.Rank
	p.quorum = slices.Clone(quorum)
	if !slices.Contains(p.quorum, p.cfg.Rank) {
		p.quorum = append(p.quorum, p.cfg.Rank)
	}
	slices.Sort(p.quorum)
	p.releaseAt = releaseAt
	if p.horizon.After(p.releaseAt) {
		p.releaseAt = p.horizon
	}
	p.contact = now
	p.lastMsg, p.bound, p.peerLC = map[int32]*peerMsg{}, map[int32]time.Time{}, map[int32]uint64{}
	p.sharedTo = map[int32]uint64{}
	p.log.Info("paxos: leader", "epoch", epoch, "quorum", p.quorum, "release_in", p.releaseAt.Sub(now))
	p.collect(now, 0)
	p.progress(now)
}

// Peon starts an epoch under leader.
func (p *Paxos) Peon(now time.Time, epoch uint64, leader int32, quorum []int32) {
	p.reset()
	p.role, p.epoch, p.leader = rolePeon, epoch, leader
	p.quorum = slices.Clone(quorum)
	p.contact = now
}

func (p *Paxos) peers() []int32 {
	var out []int32
	for _, q := range p.quorum {
		if q != p.cfg.Rank {
			out = append(out, q)
		}
	}
	return out
}

// ---- leader: phase 1 ----

// newPN is Ceph's get_new_proposal_number (spec 5.4); the caller persists it.
func (p *Paxos) newPN(gt uint64) uint64 {
	p.lastPN = max(p.lastPN, gt)
	p.lastPN = (p.lastPN/100+1)*100 + uint64(p.cfg.Rank)
	return p.lastPN
}

func (p *Paxos) collect(now time.Time, oldPN uint64) {
	p.ph = phRecovering
	p.collectDone, p.selfPromised = false, false
	p.promised = map[int32]bool{}
	p.uncV, p.uncPN, p.uncValue = 0, 0, nil
	if val := p.getValue(p.lc + 1); val != nil {
		p.uncV, p.uncValue = p.lc+1, val
		p.uncPN = p.acceptedPN
		if p.pendingV == p.lc+1 {
			p.uncPN = p.pendingPN
		}
	}
	pn := p.newPN(max(p.acceptedPN, oldPN))
	p.acceptedPN = pn
	p.persist(now, putU64(KeyLastPN, p.lastPN), putU64(KeyAcceptedPN, pn))
	p.rdFx.selfPromisePN = pn
	p.collectStart = now
	p.collectRound = p.newRound(now)
	p.sendCollect(now, p.peers())
}

// sendCollect sends (or repeats) the current COLLECT to the given members. A repeat keeps the
// pn and lease round: a peon answers it like the first (its promise is already durable).
func (p *Paxos) sendCollect(now time.Time, to []int32) {
	for _, q := range to {
		p.send(now, q, &minimonv1.PaxosMessage{
			Op: minimonv1.PaxosMessage_COLLECT, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: p.lc,
			Round: p.collectRound, LeaseDNanos: int64(p.cfg.Lease),
		}, false)
	}
	p.collectResend = now.Add(p.cfg.RenewInterval)
}

func (p *Paxos) handleLast(now time.Time, m *minimonv1.PaxosMessage) {
	from := m.From
	p.ackRound(m.Round, from)
	p.lastMsg[from] = &peerMsg{seq: m.Seq, op: m.Op, lc: m.LastCommitted, pn: m.Pn}
	if p.ph != phRecovering {
		return // late LAST of a finished collect: only its lease ack counts
	}
	if m.FirstCommitted > p.lc+1 {
		p.bootstrap(fmt.Sprintf("peon %d has history beyond mine (fc %d > lc %d + 1): sync", from, m.FirstCommitted, p.lc))
		return
	}
	p.peerLC[from] = m.LastCommitted
	p.storeState(now, m.Values, m.LastCommitted)
	if p.stopped {
		return
	}
	if p.catchUpAll(now) {
		return
	}
	switch {
	case m.Pn > p.acceptedPN:
		p.log.Info("paxos: a peon promised a higher pn; collecting again", "peon", from, "pn", m.Pn)
		p.collect(now, m.Pn)
		return
	case m.Pn < p.acceptedPN:
		return // stale
	}
	p.promised[from] = true
	if m.UncommittedPn != 0 && m.UncommittedPn >= p.uncPN && m.LastCommitted >= p.lc &&
		m.LastCommitted+1 >= p.uncV {
		if val := m.Values[m.LastCommitted+1]; val != nil && decodeValue(val) != nil {
			p.uncV, p.uncPN, p.uncValue = m.LastCommitted+1, m.UncommittedPn, val
		}
	}
}

// catchUpAll sends lagging peons the committed values they lack (spec 5.6 step 4). It reports
// true when it asked for bootstrap.
func (p *Paxos) catchUpAll(now time.Time) bool {
	for _, q := range p.peers() {
		lc, ok := p.peerLC[q]
		if !ok || p.sharedTo[q] >= p.lc {
			continue
		}
		p.sharedTo[q] = p.lc
		if !p.catchUp(now, q, lc) {
			return true
		}
	}
	return false
}

func (p *Paxos) catchUp(now time.Time, q int32, peerLC uint64) bool {
	if peerLC >= p.lc {
		return true
	}
	if peerLC+1 < p.fc && p.fc > 1 {
		p.bootstrap(fmt.Sprintf("peon %d is too far behind (lc %d, my fc %d): sync", q, peerLC, p.fc))
		return false
	}
	p.send(now, q, &minimonv1.PaxosMessage{
		Op: minimonv1.PaxosMessage_COMMIT, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: p.lc,
		Values: p.shareValues(peerLC + 1),
	}, false)
	return true
}

// maybeFinishCollect ends phase 1 once every quorum member promised (spec 5.6 step 6).
func (p *Paxos) maybeFinishCollect(now time.Time) {
	if p.role != roleLeader || p.ph != phRecovering || !p.selfPromised {
		return
	}
	for _, q := range p.peers() {
		if !p.promised[q] {
			return
		}
	}
	p.collectDone = true
	p.log.Info("paxos: collect done", "epoch", p.epoch, "fc", p.fc, "lc", p.lc, "pn", p.acceptedPN,
		"recovered", p.uncV == p.lc+1)
	if p.uncV == p.lc+1 && len(p.uncValue) > 0 {
		p.ph = phUpdatingPrevious
		p.begin(now, p.uncValue, nil, false, nil)
		return
	}
	p.ph = phActive
	p.nextRenew = now
}

// ---- leader: phase 2 ----

// begin proposes value for lc+1. carry is the value of lc when its commit is in the same
// store transaction as this accept (design.md 4a rule 5): the BEGIN then carries it, so a peon
// at lc-1 commits it and accepts in one write, and no separate COMMIT is sent.
func (p *Paxos) begin(now time.Time, value []byte, ids []ProposalID, trim bool, carry []byte) {
	v := p.lc + 1
	p.persist(now, putOp(U64(v), value), putU64(KeyPendingV, v), putU64(KeyPendingPN, p.acceptedPN))
	p.setValue(v, value)
	p.pendingV, p.pendingPN = v, p.acceptedPN
	p.rdFx.acceptPN, p.rdFx.acceptV = p.acceptedPN, v
	p.inflight, p.ifV, p.ifPN, p.ifValue, p.ifIDs, p.ifTrim = true, v, p.acceptedPN, value, ids, trim
	p.ifCarry = carry
	p.accepted, p.selfAccepted = map[int32]bool{}, false
	p.beginAt = now
	p.lastBeganPN, p.lastBeganV = p.acceptedPN, v
	if p.ph != phUpdatingPrevious {
		p.ph = phUpdating
	}
	for _, q := range p.peers() {
		// A peon that may lag gets its BEGIN after the catch-up COMMITs queued before it.
		// So does a peon with an earlier message in this batch (it must arrive first).
		lc, known := p.peerLC[q]
		atLC := known && (lc == p.lc || (carry != nil && lc+1 == p.lc))
		p.sendBegin(now, q, atLC && !p.queuedFor(q))
	}
}

func (p *Paxos) queuedFor(q int32) bool {
	for _, m := range p.rd.Messages {
		if m.To == q {
			return true
		}
	}
	return false
}

func (p *Paxos) sendBegin(now time.Time, q int32, parallel bool) {
	vals := map[uint64][]byte{p.ifV: p.ifValue}
	if p.ifCarry != nil {
		vals[p.ifV-1] = p.ifCarry
	}
	p.send(now, q, &minimonv1.PaxosMessage{
		Op: minimonv1.PaxosMessage_BEGIN, Pn: p.ifPN, FirstCommitted: p.fc, LastCommitted: p.ifV - 1,
		Values: vals, LeaseDNanos: int64(p.cfg.Lease),
	}, parallel)
}

// Propose queues an encoded minimonv1.Transaction. Everything proposed while a value is in
// flight rides the next value; an idle leader begins at once.
func (p *Paxos) Propose(now time.Time, tx []byte) (ProposalID, error) {
	if p.role != roleLeader || p.stopped {
		return 0, ErrNotLeader
	}
	t := decodeValue(tx)
	if t == nil {
		return 0, ErrBadValue
	}
	for _, op := range t.Ops {
		if op.Bucket == Bucket {
			return 0, fmt.Errorf("%w: services may not write the %q bucket", ErrBadValue, Bucket)
		}
	}
	p.nextID++
	p.queue = append(p.queue, proposal{id: p.nextID, ops: t.Ops})
	p.progress(now)
	return p.nextID, nil
}

func (p *Paxos) shouldTrim() bool {
	return !p.trimming && p.lc > p.fc && p.lc-p.fc > p.cfg.PaxosMin+p.cfg.PaxosTrimMin
}

// maybeBegin proposes the queue (and a due trim, spec 5.11) when the leader is idle.
func (p *Paxos) maybeBegin(now time.Time) bool {
	if p.role != roleLeader || p.stopped || p.ph != phActive || p.inflight || p.applyPending {
		return false
	}
	val, ids, trim, ok := p.nextValue()
	if !ok {
		return false
	}
	p.begin(now, val, ids, trim, nil)
	return true
}

// nextValue takes the queue (and a due trim) as the next value.
func (p *Paxos) nextValue() (val []byte, ids []ProposalID, trim, ok bool) {
	trim = p.shouldTrim()
	if len(p.queue) == 0 && !trim {
		return nil, nil, false, false
	}
	tx := &minimonv1.Transaction{}
	for _, q := range p.queue {
		tx.Ops = append(tx.Ops, q.ops...)
		ids = append(ids, q.id)
	}
	p.queue = nil
	if trim {
		end := min(p.lc-p.cfg.PaxosMin, p.fc+p.cfg.PaxosTrimMax)
		tx.Ops = append(tx.Ops,
			&minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: Bucket, Key: U64(p.fc), End: U64(end)},
			putU64(KeyFirstCommitted, end))
		p.trimming = true
	}
	val, err := proto.MarshalOptions{Deterministic: true}.Marshal(tx)
	if err != nil { // cannot happen for a well-formed message; never panic
		p.done(ids, 0, fmt.Errorf("paxos: encode value: %w", err))
		p.trimming = p.trimming && !trim
		return nil, nil, false, false
	}
	return val, ids, trim, true
}

func (p *Paxos) handleAccept(now time.Time, m *minimonv1.PaxosMessage) {
	p.lastMsg[m.From] = &peerMsg{seq: m.Seq, op: m.Op, lc: m.LastCommitted, pn: m.Pn}
	if !p.inflight || m.Pn != p.ifPN || m.LastCommitted+1 != p.ifV {
		p.log.Debug("paxos: ACCEPT of another round ignored", "from", m.From, "pn", m.Pn, "lc", m.LastCommitted)
		return
	}
	p.accepted[m.From] = true
}

// maybeCommit checks the commit condition (rule 5) and commits.
func (p *Paxos) maybeCommit(now time.Time) {
	if p.role != roleLeader || p.stopped || !p.inflight || !p.selfAccepted || p.applyPending ||
		!p.released(now) {
		return
	}
	n := 0
	if p.cfg.isMember(p.cfg.Rank) {
		n = 1
	}
	for q, ok := range p.accepted {
		if ok && p.cfg.isMember(q) {
			n++
		}
	}
	if n < p.cfg.majority() {
		return
	}
	for _, q := range p.peers() {
		if !p.accepted[q] && now.Before(p.bound[q]) {
			return // q may still hold a lease on the previous state
		}
	}
	v, val, ids := p.ifV, p.ifValue, p.ifIDs
	p.inflight, p.ifIDs = false, nil
	if p.ifTrim {
		p.trimming = false
	}
	p.done(ids, v, nil)
	p.applyPending, p.ph = true, phWriting
	p.rdFx.commitV = v
	if !p.commitVersion(now, v, val) {
		// The value ended the epoch (rule 8): the peons still apply it.
		p.sendCommit(now, v, val)
		return
	}
	for q := range p.accepted {
		p.peerLC[q] = v
	}
	// Group commit without a second write on the path: the next value's accept shares the
	// commit's transaction, and its BEGIN carries the committed value.
	if next, ids, trim, ok := p.nextValue(); ok {
		p.begin(now, next, ids, trim, val)
		return
	}
	p.sendCommit(now, v, val)
}

func (p *Paxos) sendCommit(now time.Time, v uint64, val []byte) {
	for _, q := range p.peers() {
		p.send(now, q, &minimonv1.PaxosMessage{
			Op: minimonv1.PaxosMessage_COMMIT, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: v,
			Values: map[uint64][]byte{v: val},
		}, false)
	}
}

// finishRound runs when the leader's commit is durable (spec 5.7 commit_finish).
func (p *Paxos) finishRound(now time.Time) {
	if !p.maybeBegin(now) {
		p.nextRenew = now // grant leases on the new state at once
	}
}

// ---- leader: leases ----

func (p *Paxos) newRound(now time.Time) uint64 {
	k := p.nextRound
	p.nextRound++
	r := &leaseRound{k: k, t: now, acks: map[int32]bool{p.cfg.Rank: true}}
	p.rounds = append(p.rounds, r)
	if len(p.rounds) > 32 {
		p.rounds = p.rounds[len(p.rounds)-32:]
	}
	p.checkRound(r)
	return k
}

func (p *Paxos) ackRound(k uint64, from int32) {
	for _, r := range p.rounds {
		if r.k == k {
			r.acks[from] = true
			p.checkRound(r)
			return
		}
	}
}

func (p *Paxos) checkRound(r *leaseRound) {
	if r.done {
		return
	}
	n := 0
	for q := range r.acks {
		if p.cfg.isMember(q) {
			n++
		}
	}
	if n < p.cfg.majority() {
		return
	}
	r.done = true
	if end := r.t.Add(p.cfg.Lease); end.After(p.leaderEnd) {
		p.leaderEnd = end
	}
	if r.t.After(p.lastMajority) {
		p.lastMajority = r.t
	}
}

// grant returns the lease D for peon q in a round sent now (rule 3), or 0.
func (p *Paxos) grant(now time.Time, q int32) time.Duration {
	if !p.released(now) || !p.collectDone || p.ph == phUpdatingPrevious || !now.Before(p.leaderEnd) {
		return 0
	}
	lm := p.lastMsg[q]
	if lm == nil || lm.used {
		return 0
	}
	// Caught up: m reported the leader's lc, or m is P's ACCEPT of the latest value or a later
	// message (seq order) from P while that value was its newest accept.
	caughtUp := lm.lc == p.lc ||
		(lm.lc+1 == p.lc && p.lastBeganV == p.lc && lm.pn == p.lastBeganPN && p.accepted[q])
	if !caughtUp || (p.inflight && !p.accepted[q]) {
		return 0
	}
	d := min(p.cfg.Lease, time.Duration(float64(p.leaderEnd.Sub(now))/p.rho))
	if d <= 0 {
		return 0
	}
	return d
}

func (p *Paxos) leaseRound(now time.Time) {
	k := p.newRound(now)
	for _, q := range p.peers() {
		m := &minimonv1.PaxosMessage{
			Op: minimonv1.PaxosMessage_LEASE, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: p.lc,
			Round: k, LeaseDNanos: int64(p.cfg.Lease),
		}
		if d := p.grant(now, q); d > 0 {
			lm := p.lastMsg[q]
			lm.used = true
			m.LeaseSeq, m.LeaseNanos = lm.seq, int64(d)
			if b := now.Add(p.scaled(d)); b.After(p.bound[q]) {
				p.bound[q] = b
			}
		}
		p.send(now, q, m, false)
	}
	p.nextRenew = now.Add(p.cfg.RenewInterval)
}

func (p *Paxos) handleLeaseAck(now time.Time, m *minimonv1.PaxosMessage) {
	p.ackRound(m.Round, m.From)
	p.lastMsg[m.From] = &peerMsg{seq: m.Seq, op: m.Op, lc: m.LastCommitted, pn: m.Pn}
	p.peerLC[m.From] = m.LastCommitted
	if !p.collectDone {
		return
	}
	// A peon that missed commits is caught up here (difference 2), then granted next round.
	if m.LastCommitted < p.lc && !(p.applyPending && m.LastCommitted+1 == p.lc) {
		if !p.catchUp(now, m.From, m.LastCommitted) {
			return
		}
		p.peerLC[m.From] = p.lc
	}
	// A peon that missed the BEGIN in flight (lost, or it lagged when it went out) gets it again.
	if p.inflight && !p.accepted[m.From] && p.peerLC[m.From]+1 == p.ifV {
		p.sendBegin(now, m.From, false)
	}
}

// ---- peon ----

func (p *Paxos) handleCollect(now time.Time, m *minimonv1.PaxosMessage) {
	p.ph = phRecovering
	p.leaseEnd = time.Time{}
	if m.FirstCommitted > p.lc+1 {
		p.bootstrap(fmt.Sprintf("leader trimmed versions I lack (its fc %d > my lc %d + 1): sync", m.FirstCommitted, p.lc))
		return
	}
	prevPN := p.acceptedPN
	if m.Pn > p.acceptedPN {
		p.acceptedPN = m.Pn
		p.persist(now, putU64(KeyAcceptedPN, m.Pn))
	}
	last := &minimonv1.PaxosMessage{
		Op: minimonv1.PaxosMessage_LAST, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: p.lc,
		Round: m.Round,
	}
	if m.LastCommitted < p.lc {
		last.Values = p.shareValues(m.LastCommitted + 1)
	}
	if m.LastCommitted <= p.lc {
		if val := p.getValue(p.lc + 1); val != nil {
			if last.Values == nil {
				last.Values = map[uint64][]byte{}
			}
			last.Values[p.lc+1] = val
			last.UncommittedPn = prevPN
			if p.pendingV == p.lc+1 {
				last.UncommittedPn = p.pendingPN
			}
		}
	}
	p.send(now, m.From, last, false)
}

func (p *Paxos) handleBegin(now time.Time, m *minimonv1.PaxosMessage) {
	p.leaseEnd = time.Time{} // rule 4: drop the lease on BEGIN
	if m.Pn < p.acceptedPN {
		p.log.Debug("paxos: BEGIN with a pn below my promise ignored", "pn", m.Pn, "accepted_pn", p.acceptedPN)
		return
	}
	if m.Pn != p.acceptedPN {
		p.bootstrap(fmt.Sprintf("BEGIN pn %d was never promised (accepted_pn %d)", m.Pn, p.acceptedPN))
		return
	}
	if m.LastCommitted == p.lc+1 && m.Values[m.LastCommitted] != nil {
		// The BEGIN carries the value it builds on (its commit shares the leader's write).
		p.storeState(now, m.Values, m.LastCommitted)
		if p.stopped {
			return
		}
	}
	if m.LastCommitted != p.lc {
		// Missed a COMMIT (or a stale BEGIN): the leader catches us up after our next LEASE_ACK.
		p.log.Debug("paxos: BEGIN for another lc ignored", "begin_lc", m.LastCommitted, "lc", p.lc)
		return
	}
	v := p.lc + 1
	val := m.Values[v]
	if decodeValue(val) == nil {
		p.log.Warn("paxos: BEGIN value does not decode; ignored", "v", v)
		return
	}
	p.ph = phUpdating
	if p.pendingV != v || p.pendingPN != p.acceptedPN || !bytes.Equal(p.getValue(v), val) {
		p.persist(now, putOp(U64(v), val), putU64(KeyPendingV, v), putU64(KeyPendingPN, p.acceptedPN))
		p.setValue(v, val)
		p.pendingV, p.pendingPN = v, p.acceptedPN
	} // else a resent BEGIN: the accept is written (or queued before this ACCEPT) already
	p.send(now, m.From, &minimonv1.PaxosMessage{
		Op: minimonv1.PaxosMessage_ACCEPT, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: p.lc,
	}, false)
}

func (p *Paxos) handleCommit(now time.Time, m *minimonv1.PaxosMessage) {
	p.storeState(now, m.Values, m.LastCommitted)
	if !p.stopped && p.ph == phUpdating && p.pendingV <= p.lc {
		p.ph = phActive
	}
}

func (p *Paxos) handleLease(now time.Time, m *minimonv1.PaxosMessage) {
	if m.LastCommitted == p.lc && m.LeaseNanos > 0 {
		if at, ok := p.sentAt(m.LeaseSeq); ok {
			if end := at.Add(time.Duration(m.LeaseNanos)); end.After(p.leaseEnd) {
				p.leaseEnd = end
			}
		}
	}
	if p.ph == phRecovering {
		p.ph = phActive
	}
	p.send(now, m.From, &minimonv1.PaxosMessage{
		Op: minimonv1.PaxosMessage_LEASE_ACK, Pn: p.acceptedPN, FirstCommitted: p.fc, LastCommitted: p.lc,
		Round: m.Round,
	}, false)
}

// ---- dispatch ----

// Step handles one message from a peer. Messages of other epochs, from unexpected senders, or
// not above the last seq seen from their sender are dropped (rule 1).
func (p *Paxos) Step(now time.Time, m *minimonv1.PaxosMessage) {
	if m == nil || p.stopped || p.role == roleNone || m.Epoch != p.epoch || m.To != p.cfg.Rank {
		return
	}
	switch p.role {
	case rolePeon:
		if m.From != p.leader {
			return
		}
	case roleLeader:
		if m.From == p.cfg.Rank || !slices.Contains(p.quorum, m.From) {
			return
		}
	}
	key := seenKey{m.From, m.Incarnation}
	if m.Seq <= p.lastSeen[key] {
		p.log.Debug("paxos: duplicate or stale message dropped", "from", m.From, "seq", m.Seq)
		return
	}
	p.lastSeen[key] = m.Seq
	if p.role == rolePeon {
		p.contact = now
		if d := time.Duration(m.LeaseDNanos); d > 0 {
			p.dL = d
		}
		switch m.Op {
		case minimonv1.PaxosMessage_COLLECT:
			p.handleCollect(now, m)
		case minimonv1.PaxosMessage_BEGIN:
			p.handleBegin(now, m)
		case minimonv1.PaxosMessage_COMMIT:
			p.handleCommit(now, m)
		case minimonv1.PaxosMessage_LEASE:
			p.handleLease(now, m)
		default:
			p.log.Debug("paxos: unexpected op at a peon", "op", m.Op)
		}
	} else {
		switch m.Op {
		case minimonv1.PaxosMessage_LAST:
			p.handleLast(now, m)
		case minimonv1.PaxosMessage_ACCEPT:
			p.handleAccept(now, m)
		case minimonv1.PaxosMessage_LEASE_ACK:
			p.handleLeaseAck(now, m)
		default:
			p.log.Debug("paxos: unexpected op at the leader", "op", m.Op)
		}
	}
	p.progress(now)
}

// Tick runs the timers (spec 5.9 adapted).
func (p *Paxos) Tick(now time.Time) {
	if p.stopped || p.role == roleNone {
		return
	}
	if p.role == rolePeon {
		if now.Sub(p.contact) >= p.cfg.LeaseAckTimeout {
			p.bootstrap("lease timeout")
		}
		return
	}
	if p.out != nil && p.out.hasPersist && now.Sub(p.out.since) >= p.cfg.AcceptTimeout {
		p.bootstrap("own store write timed out")
		return
	}
	switch {
	case p.ph == phRecovering:
		if now.Sub(p.collectStart) >= p.cfg.AcceptTimeout {
			p.bootstrap("collect timeout")
			return
		}
		if !now.Before(p.collectResend) {
			var silent []int32
			for _, q := range p.peers() {
				if !p.promised[q] {
					silent = append(silent, q)
				}
			}
			p.sendCollect(now, silent)
		}
	case p.inflight:
		start := p.beginAt
		if p.releaseAt.After(start) {
			start = p.releaseAt
		}
		if now.Sub(start) >= p.cfg.AcceptTimeout {
			p.bootstrap("accept timeout")
			return
		}
	}
	if p.collectDone && now.Sub(p.lastMajority) >= p.cfg.LeaseAckTimeout {
		p.bootstrap("lease ack timeout: a majority stopped acking")
		return
	}
	p.progress(now)
}

// progress moves the leader forward after any event.
func (p *Paxos) progress(now time.Time) {
	if p.role != roleLeader || p.stopped {
		return
	}
	p.maybeFinishCollect(now)
	p.maybeCommit(now)
	p.maybeBegin(now)
	if p.stopped || !p.collectDone {
		return
	}
	if !p.grantsOpen && p.released(now) {
		p.grantsOpen = true
		p.nextRenew = now
	}
	if !now.Before(p.nextRenew) {
		p.leaseRound(now)
	}
}
