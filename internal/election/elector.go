package election

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// maxEpoch bounds the epochs we accept from peers, so a garbage epoch can never make ours wrap
// around (epochs only grow).
const maxEpoch = uint64(1) << 62

type phase int

const (
	phaseIdle      phase = iota // neither electing nor in a quorum (nothing asked yet)
	phasePreVote                // a pre-vote round is out (or deferred to a lower contender)
	phaseCandidate              // proposing myself in epoch
	phaseWaiting                // acked a candidate (or withdrew) in epoch; waiting for VICTORY
	phaseStable                 // leader or peon of a quorum
)

func (p phase) String() string {
	switch p {
	case phaseIdle:
		return "idle"
	case phasePreVote:
		return "prevote"
	case phaseCandidate:
		return "candidate"
	case phaseWaiting:
		return "waiting"
	case phaseStable:
		return "stable"
	}
	return "unknown"
}

type ackInfo struct {
	recv time.Time
	r    time.Duration
}

// Elector is one monitor's elector. It is not safe for concurrent use: one goroutine (the
// monitor's event loop) owns it.
type Elector struct {
	cfg      Config
	lg       Logger
	members  map[int32]bool
	majority int
	rho      float64

	epoch   uint64
	maxSeen uint64 // highest epoch a peer told us about; the next election goes above it
	phase   phase
	timer   time.Time // deadline of the current phase (zero: none)
	want    bool      // keep seeking an election (retry pre-votes) until an outcome

	// Election in epoch.
	acked int32 // whom we acked in epoch (ourselves as candidate), -1 for nobody
	// loyal: the election we are in was started by our stable leader (an admission). Until it
	// ends or our wait for its victory runs out we support no one else: a member returning
	// from a partition must not win our support mid-admission and depose the leader.
	loyal  bool
	acks   map[int32]ackInfo
	expect map[int32]bool // early victory once all of these acked (rule 7)

	// Pre-vote round.
	nonceBase      uint64
	nonceCtr       uint64
	nonce          uint64
	support        map[int32]bool
	lowerContender bool // a lower rank that supports us is seeking election itself
	backedOff      bool // we already held back once for a lower contender (never twice in a row)
	deferred       bool // majority reached, holding back until timer

	// Stable quorum (phaseStable).
	leader            int32
	quorum            []int32
	lastLeaderContact time.Time
	outsidersSeen     map[int32]bool

	// seeking: when each member last asked us for an election (PREVOTE or PROPOSE); such a
	// member is alive and leaderless, so a candidate waits for its ACK too before an early
	// victory (otherwise its ACK arrives just too late and it needs an admission election).
	seeking map[int32]time.Time

	horizon       time.Time
	lastCommitted uint64

	// Pending Ready.
	persist    *minimonv1.Transaction
	msgs       []*minimonv1.ElectionMessage
	outcome    *Outcome
	outsiders  []Outsider
	electing   bool
	leaderHint *LeaderHint
	monmapHint *MonmapHint
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}

// New builds an elector from the stored epoch. A stored odd epoch (a crash mid-election) is
// bumped to the next even one; that write comes out in the first Ready. It returns an error
// when cfg is invalid or the stored epoch is unreadable (the shell then refuses to start).
func New(cfg Config, st Store, now time.Time) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stored, err := LoadEpoch(st)
	if err != nil {
		return nil, err
	}
	if stored >= maxEpoch {
		return nil, fmt.Errorf("election: stored epoch %d is implausibly large", stored)
	}
	e := &Elector{
		cfg:           cfg,
		lg:            cfg.Logger,
		members:       make(map[int32]bool, len(cfg.Members)),
		majority:      len(cfg.Members)/2 + 1,
		rho:           1 + cfg.ClockRateError,
		epoch:         stored,
		acked:         -1,
		leader:        -1,
		nonceBase:     uint64(now.UnixNano()), // distinct across restarts, which come later in time
		outsidersSeen: map[int32]bool{},
		seeking:       map[int32]time.Time{},
	}
	if e.lg == nil {
		e.lg = nopLogger{}
	}
	for _, r := range cfg.Members {
		e.members[r] = true
	}
	if stored%2 == 1 {
		e.setEpoch(stored + 1)
		e.lg.Info("election: stored epoch was odd (crashed mid-election), bumped", "epoch", e.epoch)
	}
	return e, nil
}

// Epoch is the current election epoch (odd while electing).
func (e *Elector) Epoch() uint64 { return e.epoch }

// Leader reports the leader of our stable quorum, if we are in one.
func (e *Elector) Leader() (int32, bool) {
	if e.phase != phaseStable {
		return -1, false
	}
	return e.leader, true
}

// Quorum is our stable quorum (nil when not in one). The slice is a copy.
func (e *Elector) Quorum() []int32 {
	if e.phase != phaseStable {
		return nil
	}
	return slices.Clone(e.quorum)
}

// State names what the elector is doing: idle, prevote, candidate, waiting, stable.
func (e *Elector) State() string { return e.phase.String() }

// SetHorizon records the latest paxos horizon H (rule 6); H never goes back.
func (e *Elector) SetHorizon(h time.Time) {
	if h.After(e.horizon) {
		e.horizon = h
	}
}

// SetLastCommitted records paxos last_committed, carried in PREVOTE.
func (e *Elector) SetLastCommitted(lc uint64) { e.lastCommitted = lc }

// NoteLeaderContact records that we heard from our current leader at now.
func (e *Elector) NoteLeaderContact(now time.Time) {
	if now.After(e.lastLeaderContact) {
		e.lastLeaderContact = now
	}
}

// SetQuorum tells the elector the stable state the monitor is in (leader or peon of quorum in
// epoch), e.g. after building a new Elector. A leader < 0 or a quorum without us means "in no
// quorum". An Outcome already sets this; calling SetQuorum again with the same values is harmless.
func (e *Elector) SetQuorum(epoch uint64, leader int32, quorum []int32) {
	if leader < 0 || !slices.Contains(quorum, e.cfg.Rank) || !slices.Contains(quorum, leader) {
		if e.phase == phaseStable {
			// The shell left the quorum itself: no Electing signal back to it.
			e.leader = -1
			e.quorum = nil
			e.phase = phaseIdle
			e.timer = time.Time{}
		}
		return
	}
	if epoch != e.epoch {
		e.lg.Warn("election: SetQuorum epoch differs from ours", "epoch", epoch, "ours", e.epoch)
		if epoch > e.epoch && epoch < maxEpoch {
			e.maxSeen = max(e.maxSeen, epoch)
		}
	}
	if e.phase != phaseStable || e.leader != leader {
		e.outsidersSeen = map[int32]bool{}
	}
	e.phase = phaseStable
	e.leader = leader
	e.quorum = sortedUnique(quorum)
	e.timer = time.Time{}
	e.want = false
	e.backedOff = false
}

// CallPreVote asks every member whether it has a live leader (rule 7). With a majority of
// support (counting ourselves) the elector starts an election itself. Until an outcome it keeps
// retrying every ET (plus jitter). The shell calls it when it leaves leader/peon (lease or ack
// timeout, bootstrap) or finds no quorum; while an election is already running it is a no-op.
func (e *Elector) CallPreVote(now time.Time) {
	e.want = true
	switch e.phase {
	case phaseCandidate, phaseWaiting:
		e.lg.Debug("election: pre-vote asked while electing; ignored", "phase", e.phase.String())
		return
	case phaseStable:
		e.leaveStable()
	}
	e.startPreVote(now)
}

// StartElection starts an election without a pre-vote, in an epoch above minEpoch (and ours):
// the leader admits an outsider this way; its quorum accepts because the PROPOSE comes from
// their leader. Admission elections are rate-limited by the shell.
func (e *Elector) StartElection(now time.Time, minEpoch uint64) {
	if minEpoch >= maxEpoch {
		e.lg.Warn("election: StartElection with an implausible epoch; ignored", "min_epoch", minEpoch)
		return
	}
	expect := map[int32]bool{}
	if e.phase == phaseStable && e.leader == e.cfg.Rank {
		for _, r := range e.quorum {
			expect[r] = true
		}
		for r := range e.outsidersSeen {
			expect[r] = true
		}
	} else {
		for _, r := range e.cfg.Members {
			expect[r] = true
		}
	}
	e.want = true
	e.startElection(now, minEpoch, expect)
}

// Tick fires the timeouts that are due at now.
func (e *Elector) Tick(now time.Time) {
	if e.timer.IsZero() || now.Before(e.timer) {
		return
	}
	switch e.phase {
	case phaseCandidate:
		if len(e.acks) >= e.majority {
			e.victory(now)
			return
		}
		e.lg.Info("election: no majority at the election timeout", "epoch", e.epoch, "acks", len(e.acks))
		e.want = true
		e.startPreVote(now)
	case phaseWaiting:
		e.lg.Info("election: no victory after our ack; restarting", "epoch", e.epoch, "acked", e.acked)
		e.want = true
		e.startPreVote(now)
	case phasePreVote:
		if e.deferred {
			e.startElection(now, 0, e.supportSet())
			return
		}
		if e.want {
			e.startPreVote(now)
		} else {
			e.phase = phaseIdle
			e.timer = time.Time{}
		}
	default:
		e.timer = time.Time{}
	}
}

// Step handles one message from a peer.
func (e *Elector) Step(now time.Time, m *minimonv1.ElectionMessage) {
	if m == nil {
		return
	}
	from := m.GetFrom()
	if !e.members[from] || from == e.cfg.Rank {
		e.lg.Warn("election: message from an unknown rank; dropped", "from", from, "op", m.GetOp().String())
		return
	}
	if m.GetTo() != e.cfg.Rank {
		e.lg.Warn("election: message addressed to another rank; dropped", "from", from, "to", m.GetTo())
		return
	}
	if m.GetEpoch() >= maxEpoch {
		e.lg.Warn("election: implausible epoch; dropped", "from", from, "epoch", m.GetEpoch())
		return
	}
	if m.GetMonmapEpoch() > e.cfg.MonmapEpoch {
		e.noteNewerMonmap(from, m.GetMonmapEpoch())
	}
	switch m.GetOp() {
	case minimonv1.ElectionMessage_PROPOSE:
		e.noteSeeking(now, from)
		e.handlePropose(now, m)
	case minimonv1.ElectionMessage_ACK:
		e.handleAck(now, m)
	case minimonv1.ElectionMessage_VICTORY:
		e.handleVictory(now, m)
	case minimonv1.ElectionMessage_NAK:
		e.handleNak(now, m)
	case minimonv1.ElectionMessage_PREVOTE:
		e.noteSeeking(now, from)
		e.handlePreVote(now, m)
	case minimonv1.ElectionMessage_PREVOTE_REPLY:
		e.handlePreVoteReply(now, m)
	default:
		e.lg.Warn("election: unknown op; dropped", "from", from, "op", int32(m.GetOp()))
	}
}

func (e *Elector) noteSeeking(now time.Time, from int32) {
	e.seeking[from] = now
	if e.phase == phaseCandidate && e.expect != nil {
		e.expect[from] = true
	}
}

// supports is the pre-vote test of rule 7: we are in no quorum, or we are a peon whose leader
// has been silent for LT - r.
func (e *Elector) supports(now time.Time) bool {
	if e.loyal && e.phase == phaseWaiting && now.Before(e.timer) {
		return false
	}
	if e.phase != phaseStable {
		return true
	}
	if e.leader == e.cfg.Rank {
		return false
	}
	return now.Sub(e.lastLeaderContact) >= e.cfg.LeaseAckTimeout-e.cfg.RenewInterval
}

func (e *Elector) handlePropose(now time.Time, m *minimonv1.ElectionMessage) {
	from, pe := m.GetFrom(), m.GetEpoch()
	if pe == 0 || pe%2 == 0 {
		e.lg.Warn("election: PROPOSE with an even epoch; dropped", "from", from, "epoch", pe)
		return
	}
	if m.GetMonmapEpoch() != e.cfg.MonmapEpoch {
		// Our ack could not count (rule 8), and we would waste our one ack of the epoch.
		e.lg.Info("election: PROPOSE from another monmap epoch; nak", "from", from,
			"monmap_epoch", m.GetMonmapEpoch(), "ours", e.cfg.MonmapEpoch)
		n := e.msg(minimonv1.ElectionMessage_NAK, from)
		n.NakReason = minimonv1.ElectionMessage_MONMAP_MISMATCH
		e.send(n)
		return
	}
	if pe < e.epoch {
		if e.isLeader() && !slices.Contains(e.quorum, from) {
			e.addOutsider(from, pe, 0)
		}
		// Tell it our epoch so its next round goes above it.
		n := e.msg(minimonv1.ElectionMessage_NAK, from)
		n.NakReason = minimonv1.ElectionMessage_STALE_EPOCH
		e.send(n)
		return
	}
	if pe > e.epoch {
		// From our leader (an admission election), or from the leader whose admission we
		// acked, going another round.
		fromLeader := (e.phase == phaseStable && from == e.leader) ||
			(e.loyal && e.phase == phaseWaiting && from == e.acked)
		if !fromLeader && !e.supports(now) {
			// Rule 7: a healthy quorum ignores proposals without pre-vote support, and keeps
			// its epoch.
			e.lg.Debug("election: PROPOSE ignored, our quorum is healthy", "from", from, "epoch", pe)
			return
		}
		if e.phase == phaseCandidate && from > e.cfg.Rank {
			// We would win: outbid it rather than ack (lowest rank preferred).
			e.startElection(now, pe, e.expect)
			return
		}
		e.bump(pe)
		e.loyal = fromLeader
	}
	switch {
	case e.phase == phaseCandidate:
		if from < e.cfg.Rank {
			// A lower rank competes in our epoch: give up; we ack it in its next round.
			e.lg.Info("election: lower rank competing; withdrawing", "epoch", e.epoch, "from", from)
			e.phase = phaseWaiting
			e.timer = now.Add(2 * e.cfg.ElectionTimeout)
			return
		}
		// A higher rank competes in our epoch: go another round above it (rule 9: we cannot
		// take acks it may already have).
		e.startElection(now, e.epoch, e.expect)
	case e.acked == -1:
		e.acked = from
		e.phase = phaseWaiting
		e.deferred = false
		// The winner declares at ET after its PROPOSE at the latest; allow for that plus delays.
		e.timer = now.Add(2 * e.cfg.ElectionTimeout)
		e.sendAck(now, from)
	case e.acked == from:
		e.sendAck(now, from) // a duplicate PROPOSE: the ACK may have been lost
	default:
		e.lg.Debug("election: already acked another candidate in this epoch", "epoch", e.epoch,
			"acked", e.acked, "from", from)
	}
}

func (e *Elector) sendAck(now time.Time, to int32) {
	a := e.msg(minimonv1.ElectionMessage_ACK, to)
	if r := e.horizon.Sub(now); r > 0 {
		a.HorizonRemainingNs = int64(r)
	}
	e.send(a)
}

func (e *Elector) handleAck(now time.Time, m *minimonv1.ElectionMessage) {
	from := m.GetFrom()
	if e.phase != phaseCandidate || m.GetEpoch() != e.epoch {
		if e.isLeader() && m.GetEpoch()+1 == e.epoch && !slices.Contains(e.quorum, from) {
			e.addOutsider(from, m.GetEpoch(), 0) // acked too late for our quorum
		}
		e.lg.Debug("election: ACK not for a current candidacy; dropped", "from", from, "epoch", m.GetEpoch())
		return
	}
	if m.GetMonmapEpoch() != e.cfg.MonmapEpoch {
		e.lg.Info("election: ACK from another monmap epoch; not counted", "from", from,
			"monmap_epoch", m.GetMonmapEpoch())
		return
	}
	if _, dup := e.acks[from]; dup {
		return
	}
	r := time.Duration(max(0, m.GetHorizonRemainingNs()))
	e.acks[from] = ackInfo{recv: now, r: r}
	if e.allExpectedAcked() {
		e.victory(now)
	}
}

func (e *Elector) allExpectedAcked() bool {
	if len(e.acks) < e.majority {
		return false
	}
	if len(e.acks) == len(e.cfg.Members) {
		return true
	}
	for r := range e.expect {
		if _, ok := e.acks[r]; !ok {
			return false
		}
	}
	return true
}

func (e *Elector) victory(now time.Time) {
	quorum := make([]int32, 0, len(e.acks))
	release := e.horizon
	for r, a := range e.acks {
		quorum = append(quorum, r)
		if r == e.cfg.Rank {
			continue
		}
		// Round up so the margin is never short.
		t := a.recv.Add(time.Duration(math.Ceil(e.rho * float64(a.r))))
		if t.After(release) {
			release = t
		}
	}
	slices.Sort(quorum)
	e.setEpoch(e.epoch + 1)
	e.enterStable(now, e.cfg.Rank, quorum)
	for _, r := range quorum {
		if r == e.cfg.Rank {
			continue
		}
		v := e.msg(minimonv1.ElectionMessage_VICTORY, r)
		v.Quorum = slices.Clone(quorum)
		e.send(v)
	}
	e.outcome = &Outcome{Epoch: e.epoch, Leader: e.cfg.Rank, Quorum: slices.Clone(quorum), Won: true, ReleaseAt: release}
	e.lg.Info("election: won", "epoch", e.epoch, "quorum", quorum)
}

func (e *Elector) handleVictory(now time.Time, m *minimonv1.ElectionMessage) {
	from, ve := m.GetFrom(), m.GetEpoch()
	if ve == 0 || ve%2 == 1 {
		e.lg.Warn("election: VICTORY with an odd epoch; dropped", "from", from, "epoch", ve)
		return
	}
	if e.phase == phaseStable && ve == e.epoch && e.leader == from {
		return // duplicate
	}
	if ve != e.epoch+1 || e.phase != phaseWaiting || e.acked != from {
		// Not the candidate we acked in this epoch (we rebooted, or timed out): stay out; the
		// leader admits us after our next pre-vote.
		e.lg.Info("election: unexpected VICTORY; ignored", "from", from, "epoch", ve, "ours", e.epoch,
			"acked", e.acked, "phase", e.phase.String())
		if ve > e.epoch {
			e.maxSeen = max(e.maxSeen, ve)
		}
		return
	}
	if m.GetMonmapEpoch() != e.cfg.MonmapEpoch {
		e.lg.Warn("election: VICTORY from another monmap epoch; ignored", "from", from)
		return
	}
	q := sortedUnique(m.GetQuorum())
	if len(q) != len(m.GetQuorum()) || len(q) < e.majority || !slices.Contains(q, from) ||
		!slices.Contains(q, e.cfg.Rank) {
		e.lg.Warn("election: VICTORY with a malformed quorum; ignored", "from", from, "quorum", m.GetQuorum())
		return
	}
	for _, r := range q {
		if !e.members[r] {
			e.lg.Warn("election: VICTORY quorum names an unknown rank; ignored", "from", from, "rank", r)
			return
		}
	}
	e.setEpoch(ve)
	e.enterStable(now, from, q)
	e.outcome = &Outcome{Epoch: ve, Leader: from, Quorum: slices.Clone(q)}
	e.lg.Info("election: lost; peon", "epoch", ve, "leader", from, "quorum", q)
}

func (e *Elector) handleNak(now time.Time, m *minimonv1.ElectionMessage) {
	from := m.GetFrom()
	switch m.GetNakReason() {
	case minimonv1.ElectionMessage_MONMAP_MISMATCH:
		e.lg.Info("election: NAK, monmap epochs differ", "from", from, "monmap_epoch", m.GetMonmapEpoch(),
			"ours", e.cfg.MonmapEpoch)
	case minimonv1.ElectionMessage_STALE_EPOCH:
		if m.GetEpoch() <= e.epoch {
			return
		}
		e.maxSeen = max(e.maxSeen, m.GetEpoch())
		if e.phase == phaseCandidate {
			// Our candidacy cannot win that member; go again above its epoch. Healthy quorum
			// members still ignore us (rule 7).
			e.startElection(now, m.GetEpoch(), e.expect)
		}
	default:
		e.lg.Warn("election: NAK with an unknown reason; dropped", "from", from)
	}
}

func (e *Elector) handlePreVote(now time.Time, m *minimonv1.ElectionMessage) {
	from := m.GetFrom()
	r := e.msg(minimonv1.ElectionMessage_PREVOTE_REPLY, from)
	r.Nonce = m.GetNonce()
	r.Support = e.supports(now)
	r.Contending = (e.phase == phasePreVote || e.phase == phaseCandidate) && e.cfg.Rank < from
	if e.phase == phaseStable {
		l := e.leader
		r.Leader = &l
	}
	e.send(r)
	// A member outside our quorum wants in. So does a quorum member that pre-votes in our own
	// epoch: it restarted or lost its lease and is probing, and the leader still counts it
	// (design.md difference 2), so only an admission election brings it back. A PREVOTE from
	// an older epoch was sent before our victory and means nothing now.
	if e.isLeader() && (!slices.Contains(e.quorum, from) || m.GetEpoch() >= e.epoch) {
		e.addOutsider(from, m.GetEpoch(), m.GetLastCommitted())
	}
}

func (e *Elector) handlePreVoteReply(now time.Time, m *minimonv1.ElectionMessage) {
	from := m.GetFrom()
	if e.phase == phaseCandidate && m.GetNonce() == e.nonce && e.nonce != 0 && m.GetSupport() {
		// Support that arrived after we started: wait for this member's ACK too (rule 7), so
		// a member slower than the first majority still joins without waiting for ET.
		if e.expect != nil && !e.expect[from] {
			e.expect[from] = true
		}
		return
	}
	if e.phase != phasePreVote || m.GetNonce() != e.nonce {
		e.lg.Debug("election: stale PREVOTE_REPLY; dropped", "from", from, "nonce", m.GetNonce())
		return
	}
	if m.GetEpoch() > e.maxSeen {
		e.maxSeen = m.GetEpoch()
	}
	if !m.GetSupport() {
		if m.Leader != nil && e.members[m.GetLeader()] {
			e.leaderHint = &LeaderHint{From: from, Leader: m.GetLeader(), Epoch: m.GetEpoch()}
		}
		return
	}
	e.support[from] = true
	if m.GetContending() && from < e.cfg.Rank {
		e.lowerContender = true
	}
	e.maybeStartFromPreVote(now)
}

func (e *Elector) maybeStartFromPreVote(now time.Time) {
	if e.deferred || 1+len(e.support) < e.majority {
		return
	}
	if e.lowerContender && !e.backedOff {
		// A lower rank is seeking election too: give it one ET to propose, so a cold start
		// usually elects in one round. Only once in a row, so a lower rank that cannot
		// finish does not block us forever.
		e.deferred = true
		e.backedOff = true
		e.timer = now.Add(e.cfg.ElectionTimeout)
		return
	}
	e.startElection(now, 0, e.supportSet())
}

func (e *Elector) supportSet() map[int32]bool {
	s := make(map[int32]bool, len(e.support)+1)
	for r := range e.support {
		s[r] = true
	}
	s[e.cfg.Rank] = true
	return s
}

func (e *Elector) startPreVote(now time.Time) {
	e.phase = phasePreVote
	e.nonceCtr++
	e.nonce = e.nonceBase + e.nonceCtr
	e.support = map[int32]bool{}
	e.lowerContender = false
	e.deferred = false
	wait := e.cfg.ElectionTimeout
	if e.cfg.Rand != nil {
		wait += time.Duration(e.cfg.Rand.Int64N(int64(e.cfg.ElectionTimeout)/2 + 1))
	}
	e.timer = now.Add(wait)
	for _, r := range e.cfg.Members {
		if r == e.cfg.Rank {
			continue
		}
		p := e.msg(minimonv1.ElectionMessage_PREVOTE, r)
		p.Nonce = e.nonce
		p.LastCommitted = e.lastCommitted
		e.send(p)
	}
	e.maybeStartFromPreVote(now) // a one-member map needs nobody
}

// startElection proposes ourselves in a fresh odd epoch above ours, minEpoch and any epoch a
// peer told us about.
func (e *Elector) startElection(now time.Time, minEpoch uint64, expect map[int32]bool) {
	base := max(e.epoch, minEpoch, e.maxSeen)
	next := base + 1
	if next%2 == 0 {
		next++
	}
	if next >= maxEpoch {
		e.lg.Warn("election: epoch exhausted; not starting", "epoch", base)
		return
	}
	e.bump(next)
	if expect == nil {
		expect = map[int32]bool{}
	}
	for r, at := range e.seeking {
		if now.Sub(at) < e.cfg.ElectionTimeout {
			expect[r] = true
		}
	}
	e.phase = phaseCandidate
	e.acked = e.cfg.Rank
	e.acks = map[int32]ackInfo{e.cfg.Rank: {recv: now}}
	e.expect = expect
	e.deferred = false
	e.timer = now.Add(e.cfg.ElectionTimeout)
	for _, r := range e.cfg.Members {
		if r != e.cfg.Rank {
			e.send(e.msg(minimonv1.ElectionMessage_PROPOSE, r))
		}
	}
	e.lg.Info("election: proposing", "epoch", e.epoch)
	if e.allExpectedAcked() {
		e.victory(now)
	}
}

// bump moves to a higher odd epoch: we are electing (spec 4.1 bump_epoch), with nobody acked.
func (e *Elector) bump(epoch uint64) {
	if epoch <= e.epoch {
		return
	}
	e.setEpoch(epoch)
	if e.phase == phaseStable {
		e.leaveStable()
	}
	e.electing = true
	e.phase = phaseIdle
	e.acked = -1
	e.acks = nil
	e.loyal = false
}

func (e *Elector) setEpoch(epoch uint64) {
	e.epoch = epoch
	e.persist = epochTx(epoch)
}

func (e *Elector) enterStable(now time.Time, leader int32, quorum []int32) {
	e.phase = phaseStable
	e.leader = leader
	e.quorum = quorum
	e.lastLeaderContact = now
	e.loyal = false
	e.outsidersSeen = map[int32]bool{}
	e.timer = time.Time{}
	e.want = false
	e.backedOff = false
	e.deferred = false
	e.acks = nil
}

func (e *Elector) leaveStable() {
	e.electing = true
	e.leader = -1
	e.quorum = nil
	e.phase = phaseIdle
}

func (e *Elector) isLeader() bool { return e.phase == phaseStable && e.leader == e.cfg.Rank }

func (e *Elector) addOutsider(rank int32, epoch, lc uint64) {
	e.outsidersSeen[rank] = true
	for i := range e.outsiders {
		if e.outsiders[i].Rank == rank {
			e.outsiders[i].Epoch = max(e.outsiders[i].Epoch, epoch)
			e.outsiders[i].LastCommitted = max(e.outsiders[i].LastCommitted, lc)
			return
		}
	}
	e.outsiders = append(e.outsiders, Outsider{Rank: rank, Epoch: epoch, LastCommitted: lc})
}

func (e *Elector) noteNewerMonmap(from int32, me uint64) {
	if e.monmapHint == nil || me > e.monmapHint.MonmapEpoch {
		e.monmapHint = &MonmapHint{From: from, MonmapEpoch: me}
	}
}

func (e *Elector) msg(op minimonv1.ElectionMessage_Op, to int32) *minimonv1.ElectionMessage {
	return &minimonv1.ElectionMessage{
		Op:          op,
		From:        e.cfg.Rank,
		To:          to,
		Epoch:       e.epoch,
		MonmapEpoch: e.cfg.MonmapEpoch,
	}
}

func (e *Elector) send(m *minimonv1.ElectionMessage) { e.msgs = append(e.msgs, m) }

// HasReady reports whether Ready would ask for anything.
func (e *Elector) HasReady() bool {
	return e.persist != nil || len(e.msgs) > 0 || e.outcome != nil || len(e.outsiders) > 0 ||
		e.electing || e.leaderHint != nil || e.monmapHint != nil
}

// Ready returns what the shell must do now (see the package doc); then Advance(rd).
func (e *Elector) Ready() Ready {
	return Ready{
		Persist:     e.persist,
		Messages:    slices.Clone(e.msgs),
		Outcome:     e.outcome,
		Outsiders:   slices.Clone(e.outsiders),
		Electing:    e.electing,
		Leader:      e.leaderHint,
		NewerMonmap: e.monmapHint,
	}
}

// Advance tells the elector rd has been executed. Anything produced after Ready was taken stays
// pending for the next Ready.
func (e *Elector) Advance(rd Ready) {
	if rd.Persist != nil && rd.Persist == e.persist {
		e.persist = nil
	}
	if n := len(rd.Messages); n <= len(e.msgs) {
		e.msgs = e.msgs[n:]
	}
	if len(e.msgs) == 0 {
		e.msgs = nil
	}
	if rd.Outcome != nil && rd.Outcome == e.outcome {
		e.outcome = nil
	}
	if n := len(rd.Outsiders); n <= len(e.outsiders) {
		e.outsiders = e.outsiders[n:]
	}
	if len(e.outsiders) == 0 {
		e.outsiders = nil
	}
	if rd.Electing {
		e.electing = false
	}
	if rd.Leader != nil && rd.Leader == e.leaderHint {
		e.leaderHint = nil
	}
	if rd.NewerMonmap != nil && rd.NewerMonmap == e.monmapHint {
		e.monmapHint = nil
	}
}

func sortedUnique(in []int32) []int32 {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// PersistedEpoch decodes the epoch a Persist transaction writes (for tests and the simulator).
func PersistedEpoch(tx *minimonv1.Transaction) (uint64, bool) {
	for _, op := range tx.GetOps() {
		if op.GetBucket() == Bucket && string(op.GetKey()) == KeyEpoch && len(op.GetValue()) == 8 {
			return binary.BigEndian.Uint64(op.GetValue()), true
		}
	}
	return 0, false
}
