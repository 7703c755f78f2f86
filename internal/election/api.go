// Package election is the monitor elector (ceph-mon-spec.md section 4, classic strategy: lowest
// rank preferred) with the differences of design.md 4a rules 6-9: a nonce-bound pre-vote guards
// every election (rule 7), an ACK carries the acker's remaining lease horizon R (rule 6), ACKs
// count only from members with the candidate's monmap epoch (rule 8), and a member acks at most
// one candidate per election epoch (rule 9: a candidate that needs another round bumps the epoch).
//
// It is pure logic: no goroutines, no clock, no I/O, no global randomness (jitter comes only
// from Config.Rand). The shell (the monitor, or the simulator) drives it with Step, Tick,
// CallPreVote and StartElection, passing a monotonic `now`, and executes what it asks for as a
// Ready batch, in this order:
//
//  1. rd.Persist (the election epoch) is made durable (one store transaction, fsync on) before
//     anything else: no PROPOSE, ACK or VICTORY may leave before the epoch it names is on disk,
//     and the shell must not act on rd.Outcome before that either;
//  2. if rd.Electing, the monitor leaves leader/peon (paxos.Restart, drop the lease: rule 3);
//  3. every message in rd.Messages is sent;
//  4. rd.Outcome, if any, makes the monitor leader (paxos.Leader with Outcome.ReleaseAt) or peon;
//     rd.Outsiders, rd.Leader and rd.NewerMonmap are hints for the shell (see Ready);
//  5. then it calls Advance(rd). The next Ready is taken only after Advance.
//
// Epochs (spec 4.1): odd while an election is in progress, even once a quorum formed. The epoch
// is stored in bucket "election" key "epoch" as 8-byte big-endian. A stored odd epoch (a crash
// mid-election) is bumped to the next even one at New, and that write is the first Ready.
// A stored 0 (never elected) stays 0 in memory; the first election uses epoch 1.
//
// Classic strategy with rule 9 (one ack per epoch): a member acks the first candidate it hears
// in an epoch, whatever its rank; the lowest rank is still preferred because a candidate that
// hears a higher-rank competitor in its epoch goes another round above it (higher ranks yield,
// and in the pre-vote a higher rank holds back once when a lower rank is seeking election too),
// so a cold start usually elects rank 0 in one round. Victory comes as soon as every member that
// supported the pre-vote (or asked us for an election within ET) has acked, or at ET with a
// majority. A candidate without a majority at ET, and a member that acked and heard no VICTORY
// within 2*ET (the winner may declare at ET), go back to a pre-vote (and so to a new, higher
// epoch once supported). A member never bumps its epoch for a PROPOSE it does not support
// (healthy quorum), unless the PROPOSE comes from its own leader (admission).
//
// Surprising input (unknown op, unknown rank, epoch 0, duplicates, garbage) is logged and
// ignored; nothing here panics on a message.
package election

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// Bucket and key of the persisted election epoch (design.md section 3).
const (
	Bucket   = "election"
	KeyEpoch = "epoch"
)

// Store reads persisted state; kvstore implements it. A missing key returns (nil, nil).
type Store interface {
	Get(bucket string, key []byte) ([]byte, error)
}

// Logger is the slice of a structured logger the elector uses (the same shape as
// paxos.Logger, so one value serves both). Fields are key/value pairs.
type Logger interface {
	Debug(msg string, fields ...any)
	Info(msg string, fields ...any)
	Warn(msg string, fields ...any)
}

// Config configures one elector.
type Config struct {
	Rank    int32   // this monitor's rank
	Members []int32 // ranks of the member map (majority = len/2+1)

	ElectionTimeout time.Duration // mon_election_timeout, ET
	LeaseAckTimeout time.Duration // LT: pre-vote support needs LT - r of leader silence
	RenewInterval   time.Duration // r
	ClockRateError  float64       // e; rho = 1+e scales the R of every ACK (rule 6)
	MonmapEpoch     uint64        // our monmap epoch, carried in every message (rule 8)

	// Rand, if set, jitters the pre-vote retry interval by up to ET/2 so that members that
	// failed together do not retry in lockstep. nil means no jitter.
	Rand *rand.Rand
	// Logger, nil for none.
	Logger Logger
}

// Validate checks the configuration (the shell calls it before opening anything; New calls it).
func (c *Config) Validate() error {
	if c.ElectionTimeout <= 0 {
		return errors.New("election: ElectionTimeout must be > 0")
	}
	if c.RenewInterval < 0 {
		return errors.New("election: RenewInterval must be >= 0")
	}
	if c.LeaseAckTimeout <= c.RenewInterval {
		return fmt.Errorf("election: LeaseAckTimeout (%v) must exceed RenewInterval (%v): the pre-vote support threshold LT - r must be positive",
			c.LeaseAckTimeout, c.RenewInterval)
	}
	if c.ClockRateError < 0 || c.ClockRateError > 0.05 {
		return fmt.Errorf("election: ClockRateError %v out of [0, 0.05]", c.ClockRateError)
	}
	if len(c.Members) == 0 {
		return errors.New("election: Members is empty")
	}
	seen := make(map[int32]bool, len(c.Members))
	for _, r := range c.Members {
		if r < 0 {
			return fmt.Errorf("election: negative rank %d in Members", r)
		}
		if seen[r] {
			return fmt.Errorf("election: rank %d twice in Members", r)
		}
		seen[r] = true
	}
	if !seen[c.Rank] {
		return fmt.Errorf("election: own rank %d not in Members", c.Rank)
	}
	return nil
}

// Ready is what the elector asks the shell to do; see the package doc for the order.
type Ready struct {
	Persist  *minimonv1.Transaction
	Messages []*minimonv1.ElectionMessage
	Outcome  *Outcome
	// Outsiders: members outside our quorum that asked this leader for pre-vote support (or
	// acked too late); the leader's shell may admit one with StartElection(now, o.Epoch)
	// (rate-limited by the shell).
	Outsiders []Outsider
	// Electing (extension): this elector joined or started an election in this batch, so the
	// monitor must leave leader/peon now (paxos.Restart, drop its lease). Handled before
	// Messages and before Outcome (both may come in the same batch).
	Electing bool
	// Leader (extension): a pre-vote reply refused support and named a live leader; the shell
	// may contact it (sync, catch up) and wait to be admitted.
	Leader *LeaderHint
	// NewerMonmap (extension): a peer carries a monmap epoch above ours; the shell should
	// bootstrap and sync, then build a new Elector with the new member map.
	NewerMonmap *MonmapHint
}

// Outcome ends an election for this member.
type Outcome struct {
	Epoch  uint64  // the new even epoch
	Leader int32   // the winner
	Quorum []int32 // ascending, leader included
	Won    bool    // this member is the leader
	// ReleaseAt (winner only): max(own H, recv_X + rho*R_X for every acker X); paxos grants,
	// serves and commits nothing before it (rule 6).
	ReleaseAt time.Time
}

// Outsider is a member outside our quorum asking for pre-vote support.
type Outsider struct {
	Rank          int32
	Epoch         uint64 // its election epoch: an admission election must go above it
	LastCommitted uint64
}

// LeaderHint names a live leader reported by a peer.
type LeaderHint struct {
	From   int32  // who said so
	Leader int32  // the leader's rank
	Epoch  uint64 // the reporter's election epoch
}

// MonmapHint says a peer has a newer monmap.
type MonmapHint struct {
	From        int32
	MonmapEpoch uint64
}

// IsEmpty reports whether rd asks for nothing.
func (rd *Ready) IsEmpty() bool {
	return rd.Persist == nil && len(rd.Messages) == 0 && rd.Outcome == nil &&
		len(rd.Outsiders) == 0 && !rd.Electing && rd.Leader == nil && rd.NewerMonmap == nil
}

// LoadEpoch reads the stored election epoch (0 when absent). The shell uses it for
// paxos.New's freshCluster (stored epoch < 2) before New rewrites an odd epoch.
func LoadEpoch(st Store) (uint64, error) {
	v, err := st.Get(Bucket, []byte(KeyEpoch))
	if err != nil {
		return 0, fmt.Errorf("election: reading the stored epoch: %w", err)
	}
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("election: stored epoch is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func epochTx(epoch uint64) *minimonv1.Transaction {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, epoch)
	return &minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{
		Kind:   minimonv1.StoreOp_PUT,
		Bucket: Bucket,
		Key:    []byte(KeyEpoch),
		Value:  v,
	}}}
}
