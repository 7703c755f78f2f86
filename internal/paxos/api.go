// Package paxos is one Ceph-style Paxos instance (ceph-mon-spec.md section 5) with the
// differences of design.md section 4 and every rule of section 4a.
//
// It is pure logic: no goroutines, no sockets, no clock, no randomness of its own. The shell (the
// monitor daemon, or the simulator) drives it with Step, Tick and Propose, passing a monotonic
// `now` with each call, and executes what it asks for, handed out as a Ready batch:
//
//  1. rd.Parallel may be sent at once: the leader's BEGIN goes out while the leader writes its
//     own accept (design.md 4.6), so leader and peons write at the same time.
//  2. rd.Persist must be made durable (one store transaction, fsync on) before anything else.
//  3. then every message in rd.Messages is sent (they may promise durability: LAST, ACCEPT,
//     COMMIT, LEASE_ACK);
//  4. then the shell refreshes services from rd.Committed (already in the store after step 2)
//     and completes the client requests in rd.Done;
//  5. then it calls Advance(now, rd), with now read after the sends: only then does the core
//     count its own write as durable (and raise its horizon H for the messages sent). Every
//     non-empty Ready must be Advanced, also one without Persist.
//
// rd.Done may also be completed before step 2 (design.md 4.6): a nil Err means the commit
// condition (rule 5) already holds, so the value is chosen whatever happens to the leader's own
// commit write; reads still wait for that write (Readable is false until it is Advanced).
//
// While a Ready is outstanding (handed out, not yet Advanced) HasReady is false and Ready
// returns nothing, except a bootstrap request: then Ready returns a Ready with only Bootstrap
// set (its Advance is a no-op). So store writes are issued one batch at a time, in order.
// Seqs (rule 1) are stamped when a Ready is handed out, in send order: Parallel, then Messages.
//
// Stored state is read through the Store interface; the core never writes the store itself.
// A surprising message (wrong pn, unexpected COMMIT, garbage) never panics: the core logs it and,
// where Ceph would assert, asks the shell to bootstrap (rd.Bootstrap).
package paxos

import (
	"errors"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Bucket and keys of the paxos state in the store (design.md section 3). Versions are stored
// under their 8-byte big-endian number.
const (
	Bucket            = "paxos"
	KeyFirstCommitted = "first_committed"
	KeyLastCommitted  = "last_committed"
	KeyLastPN         = "last_pn"
	KeyAcceptedPN     = "accepted_pn"
	KeyPendingV       = "pending_v"
	KeyPendingPN      = "pending_pn"
)

// Sentinel errors. The shell maps them to gRPC codes in one table.
var (
	ErrNotLeader    = errors.New("paxos: not the leader")
	ErrNotWriteable = errors.New("paxos: not writeable now (recovering, or the epoch is not yet released)")
	ErrStepDown     = errors.New("paxos: the leader stepped down before the value was chosen; outcome unknown")
	ErrBadValue     = errors.New("paxos: proposed value is not a valid transaction")
)

// Store reads persisted state. The kvstore package implements it. A missing key returns
// (nil, nil).
type Store interface {
	Get(bucket string, key []byte) ([]byte, error)
}

// Config configures one instance. Durations are the options of design.md 4a under Ceph's names.
type Config struct {
	Rank    int32   // this monitor's rank
	Members []int32 // ranks of every member of the member map (majority = len/2+1)

	Lease           time.Duration // mon_lease, d
	RenewInterval   time.Duration // r = mon_lease * mon_lease_renew_interval_factor
	LeaseAckTimeout time.Duration // LT = AT = mon_lease * mon_lease_ack_timeout_factor
	AcceptTimeout   time.Duration // mon_lease * mon_accept_timeout_factor (collect, accept, own write)
	ClockRateError  float64       // e, the pairwise clock-rate bound; rho = 1+e

	PaxosMin     uint64 // paxos_min: versions always kept
	PaxosTrimMin uint64 // paxos_trim_min: trim only when this many can go
	PaxosTrimMax uint64 // paxos_trim_max: at most this many per trim
	MaxJoinDrift uint64 // paxos_max_join_drift (used by the shell for the sync decision)

	// Incarnation is a random non-zero number the shell draws at every process start; it
	// tells a restarted sender's messages (whose seq starts again) apart (rule 1).
	Incarnation uint64

	// EndsEpoch reports whether a committed value changes the member map or the lease
	// parameters (rule 8): after applying it the core asks for a bootstrap and grants no
	// further LEASE. Nil means no value ends the epoch.
	EndsEpoch func(value []byte) bool

	// Logger, nil for none.
	Logger Logger
}

// Logger is the small slice of *zap.Logger the core uses, so tests and the simulator can pass
// zap.NewNop() or zaptest.
type Logger interface {
	Debug(msg string, fields ...any)
	Info(msg string, fields ...any)
	Warn(msg string, fields ...any)
}

// ProposalID names a proposal handed to Propose; it comes back in Ready.Done.
type ProposalID uint64

// Entry is one committed version.
type Entry struct {
	Version uint64
	Value   []byte // an encoded minimonv1.Transaction
}

// Result completes a proposal. Err is nil once the commit condition (rule 5) holds for the value
// that carries it; ErrStepDown when the outcome is unknown (the value may still commit later).
type Result struct {
	ID      ProposalID
	Version uint64
	Err     error
}

// Ready is what the core asks the shell to do; see the package doc for the order.
type Ready struct {
	Parallel  []*minimonv1.PaxosMessage
	Persist   *minimonv1.Transaction
	Messages  []*minimonv1.PaxosMessage
	Committed []Entry
	Done      []Result
	// Bootstrap is non-empty when the core wants the monitor to go back to probing (why).
	Bootstrap string

	id uint64 // matches Advance to the Ready it acknowledges
}

// IsEmpty reports whether rd asks for nothing.
func (rd *Ready) IsEmpty() bool {
	return len(rd.Parallel) == 0 && rd.Persist == nil && len(rd.Messages) == 0 &&
		len(rd.Committed) == 0 && len(rd.Done) == 0 && rd.Bootstrap == ""
}
