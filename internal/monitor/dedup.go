package monitor

// Write deduplication (design.md 4.7, spec 6.8 point 5 and scenario 35).
//
// A client write carries WriteID{client_id, seq}. The leader keeps, in replicated state (the
// bucket kvstore.BucketDedup, key client_id), a record per client of the writes it applied:
// the most recent dedupMaxSeqs sequence numbers with their replies, plus a floor below which
// it no longer remembers. The record is written by the SAME Paxos value as the write, so it
// commits (or not) with it and survives failover: a write resent after an election (by the
// peon that forwarded it, or by the client hunting another monitor) is answered from the
// record instead of being applied again.
//
// Before staging a write the leader looks (client_id, seq) up:
//   - in the writes it has staged but not yet seen complete (same leader term): the resend
//     attaches to the first proposal's result, nothing new is proposed;
//   - in the record: the recorded reply is returned, nothing is proposed;
//   - seq at or below the record's floor (and not recorded): FailedPrecondition "stale write
//     sequence" (it may have been applied; we can no longer tell);
//   - otherwise it is a new write (this also admits a client's concurrent writes arriving out
//     of order, which one "last seq" per client would refuse).
//
// Bounds: dedupMaxSeqs seqs per client (older ones raise the floor) and dedupMaxClients
// clients: a write of a new client at capacity also erases the client whose last write is
// oldest (by Paxos version), in the same value. An evicted client's old retries are then
// treated as new writes; with 10000 clients that needs 10000 other clients to write after its
// last write and before its retry.
//
// Writes without client_id, and writes that change nothing (no ops: nothing is proposed), are
// not recorded; a retry of the latter re-validates and gets the same answer.
//
// The record does not hold the version that committed the write (the value cannot name its
// own version: paxos assigns it when it batches the queue). It holds the last committed
// version when the write was staged; the committing version is found on a duplicate by
// scanning the Paxos log forward from there (a handful of versions; 0 once trimmed).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

const (
	// dedupMaxClients bounds the clients the table remembers.
	dedupMaxClients = 10000
	// dedupMaxSeqs bounds the writes remembered per client (concurrent writes of one client).
	dedupMaxSeqs = 8
	// dedupMaxScan bounds the Paxos versions scanned for a duplicate's version.
	dedupMaxScan = 1000
	// dedupRecordFormat is the first byte of an encoded record.
	dedupRecordFormat = 1
)

// errStaleSeq answers a resend of a write the table no longer remembers.
var errStaleSeq = status.Error(codes.FailedPrecondition, "stale write sequence")

// dedupEntry is one remembered write.
type dedupEntry struct {
	Seq  uint64
	Hint uint64 // last committed version when the write was staged (the write commits above it)
	Code uint32 // gRPC code of the reply (OK: only applied writes are recorded today)
	Msg  string // the reply's message
}

// dedupRecord is one client's record: entries in seq order, and the floor at or below which
// seqs are forgotten.
type dedupRecord struct {
	Floor   uint64
	Entries []dedupEntry
}

// lastHint orders records for eviction (the client whose last write is oldest goes first).
func (r *dedupRecord) lastHint() uint64 {
	var h uint64
	for _, e := range r.Entries {
		h = max(h, e.Hint)
	}
	return h
}

func (r *dedupRecord) find(seq uint64) (dedupEntry, bool) {
	for _, e := range r.Entries {
		if e.Seq == seq {
			return e, true
		}
	}
	return dedupEntry{}, false
}

// with returns a copy of r with e added, keeping at most dedupMaxSeqs entries.
func (r *dedupRecord) with(e dedupEntry) *dedupRecord {
	n := &dedupRecord{Floor: r.Floor, Entries: append(slices.Clone(r.Entries), e)}
	slices.SortFunc(n.Entries, func(a, b dedupEntry) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	for len(n.Entries) > dedupMaxSeqs {
		n.Floor = max(n.Floor, n.Entries[0].Seq)
		n.Entries = n.Entries[1:]
	}
	return n
}

func encodeDedupRecord(r *dedupRecord) []byte {
	b := []byte{dedupRecordFormat}
	b = binary.AppendUvarint(b, r.Floor)
	b = binary.AppendUvarint(b, uint64(len(r.Entries)))
	for _, e := range r.Entries {
		b = binary.AppendUvarint(b, e.Seq)
		b = binary.AppendUvarint(b, e.Hint)
		b = binary.AppendUvarint(b, uint64(e.Code))
		b = binary.AppendUvarint(b, uint64(len(e.Msg)))
		b = append(b, e.Msg...)
	}
	return b
}

var errBadDedupRecord = errors.New("monitor: malformed dedup record")

// decodeDedupRecord never panics on a damaged record.
func decodeDedupRecord(b []byte) (*dedupRecord, error) {
	if len(b) == 0 || b[0] != dedupRecordFormat {
		return nil, errBadDedupRecord
	}
	rd := bytes.NewReader(b[1:])
	u := func() (uint64, error) { return binary.ReadUvarint(rd) }
	r := &dedupRecord{}
	var err error
	if r.Floor, err = u(); err != nil {
		return nil, errBadDedupRecord
	}
	n, err := u()
	if err != nil || n > dedupMaxSeqs {
		return nil, errBadDedupRecord
	}
	for range n {
		var e dedupEntry
		var code, l uint64
		if e.Seq, err = u(); err != nil {
			return nil, errBadDedupRecord
		}
		if e.Hint, err = u(); err != nil {
			return nil, errBadDedupRecord
		}
		if code, err = u(); err != nil || code > 1<<16 {
			return nil, errBadDedupRecord
		}
		if l, err = u(); err != nil || l > uint64(rd.Len()) {
			return nil, errBadDedupRecord
		}
		msg := make([]byte, l)
		if _, err := rd.Read(msg); err != nil && l > 0 {
			return nil, errBadDedupRecord
		}
		e.Code, e.Msg = uint32(code), string(msg)
		r.Entries = append(r.Entries, e)
	}
	if rd.Len() != 0 {
		return nil, errBadDedupRecord
	}
	return r, nil
}

// inflightWrite is a write staged by this leader whose proposal has not completed: resends
// of the same WriteID wait on its result.
type inflightWrite struct {
	msg     string
	waiters []chan paxos.Result
}

type writeKey struct {
	client string
	seq    uint64
}

// dedupTable is the leader's view of the table (owned by the event loop). The committed
// records live in the store; this keeps what the store cannot tell quickly.
type dedupTable struct {
	// index: client -> lastHint of its committed record, for the bound and eviction; loaded
	// from the store on first use, kept current from committed values.
	index  map[string]uint64
	loaded bool
	// staged: the newest record this leader has proposed per client, until the store holds
	// it (a reply may go out before the leader's own commit write, design.md 4.6, so "the
	// proposal completed" is not enough) or leadership is lost. Later writes build on it.
	staged map[string]*stagedRecord
	// ready: this leader term has been readable once, so the store holds every value an
	// earlier leader committed (recovery's re-proposed value included); from then on the
	// store plus staged is the whole table.
	ready bool
	// inflight: writes proposed and not yet completed.
	inflight map[writeKey]*inflightWrite
}

type stagedRecord struct {
	rec *dedupRecord
	enc []byte // rec encoded, as proposed: dropped once a committed value stores exactly it
}

func newDedupTable() *dedupTable {
	return &dedupTable{staged: map[string]*stagedRecord{}, inflight: map[writeKey]*inflightWrite{}}
}

// discard forgets what was staged (lost leadership; the proposals complete with ErrStepDown).
func (d *dedupTable) discard() {
	d.staged = map[string]*stagedRecord{}
	d.inflight = map[writeKey]*inflightWrite{}
	d.ready = false
}

// committed keeps the index current from committed values (nil entries: the store was
// replaced by a sync, reload on next use).
func (d *dedupTable) committed(entries []paxos.Entry) {
	if entries == nil {
		d.loaded, d.index = false, nil
		return
	}
	for _, e := range entries {
		tx, err := services.Decode(e.Value)
		if err != nil {
			continue
		}
		for _, op := range tx.GetOps() {
			if op.GetBucket() != kvstore.BucketDedup {
				continue
			}
			client := string(op.GetKey())
			if s := d.staged[client]; s != nil && bytes.Equal(s.enc, op.GetValue()) {
				delete(d.staged, client) // the store holds our newest record now
			}
			if !d.loaded {
				continue
			}
			switch op.GetKind() {
			case minimonv1.StoreOp_PUT:
				if r, err := decodeDedupRecord(op.GetValue()); err == nil {
					d.index[client] = r.lastHint()
				}
			case minimonv1.StoreOp_ERASE:
				delete(d.index, client)
			}
		}
	}
}

func (d *dedupTable) load(st kvstore.Store) error {
	if d.loaded {
		return nil
	}
	idx := map[string]uint64{}
	err := st.ForEach(kvstore.BucketDedup, nil, func(k, v []byte) error {
		var h uint64
		if r, err := decodeDedupRecord(v); err == nil {
			h = r.lastHint()
		}
		idx[string(k)] = h
		return nil
	})
	if err != nil {
		return err
	}
	d.index, d.loaded = idx, true
	return nil
}

// record returns the newest record of client: staged by this leader, else committed.
func (d *dedupTable) record(st kvstore.Store, client string) (*dedupRecord, error) {
	if s := d.staged[client]; s != nil {
		return s.rec, nil
	}
	b, err := st.Get(kvstore.BucketDedup, []byte(client))
	if err != nil || b == nil {
		return &dedupRecord{}, err
	}
	r, err := decodeDedupRecord(b)
	if err != nil {
		// A damaged record must not block the client forever: start it again (logged by
		// the caller through the error path would refuse every write of this client).
		return &dedupRecord{}, nil
	}
	return r, nil
}

// dedupVerdict is what the leader does with a write before staging it.
type dedupVerdict struct {
	reply  *minimonv1.KVWriteReply // answered from the record
	err    error                   // stale, or the store failed
	attach chan paxos.Result       // a resend of an in-flight write: wait on this
	msg    string                  // with attach: the reply's message
	wait   bool                    // the table is not known yet: wait and check again
}

// check looks a write up (on the loop, leader only). ok false: a new write, stage it;
// v.wait: the leader cannot tell yet (recovering), try again later.
func (d *dedupTable) check(st kvstore.Store, wid *minimonv1.WriteID, readable func() bool) (v dedupVerdict, ok bool) {
	client, seq := wid.GetClientId(), wid.GetSeq()
	if client == "" {
		return v, false
	}
	if !d.ready {
		if !readable() {
			return dedupVerdict{wait: true}, true
		}
		d.ready = true
	}
	if w := d.inflight[writeKey{client, seq}]; w != nil {
		ch := make(chan paxos.Result, 1)
		w.waiters = append(w.waiters, ch)
		return dedupVerdict{attach: ch, msg: w.msg}, true
	}
	r, err := d.record(st, client)
	if err != nil {
		return dedupVerdict{err: status.Error(codes.Internal, err.Error())}, true
	}
	if e, found := r.find(seq); found {
		if e.Code != uint32(codes.OK) {
			return dedupVerdict{err: status.Error(codes.Code(e.Code), e.Msg)}, true
		}
		return dedupVerdict{reply: &minimonv1.KVWriteReply{Message: e.Msg, Version: committedVersion(st, client, seq, e.Hint)}}, true
	}
	if seq <= r.Floor {
		return dedupVerdict{err: errStaleSeq}, true
	}
	return v, false
}

// prepare returns the ops that record the write (to merge into the write's own value) and
// stage, to call once the value is proposed: it registers the write as in flight and returns
// the proposal's completion callback. nil, nil for a write without client_id.
func (d *dedupTable) prepare(st kvstore.Store, wid *minimonv1.WriteID, msg string, lc uint64) ([]*minimonv1.StoreOp, func() func(paxos.Result), error) {
	client, seq := wid.GetClientId(), wid.GetSeq()
	if client == "" {
		return nil, nil, nil
	}
	if err := d.load(st); err != nil {
		return nil, nil, err
	}
	old, err := d.record(st, client)
	if err != nil {
		return nil, nil, err
	}
	rec := old.with(dedupEntry{Seq: seq, Hint: lc, Code: uint32(codes.OK), Msg: msg})
	ops := []*minimonv1.StoreOp{{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketDedup,
		Key: []byte(client), Value: encodeDedupRecord(rec)}}
	if _, known := d.index[client]; !known && d.staged[client] == nil && len(d.index) >= dedupMaxClients {
		if victim, ok := d.oldest(); ok {
			ops = append(ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE, Bucket: kvstore.BucketDedup, Key: []byte(victim)})
		}
	}
	staged := func() func(paxos.Result) {
		d.staged[client] = &stagedRecord{rec: rec, enc: ops[0].GetValue()}
		key := writeKey{client, seq}
		w := &inflightWrite{msg: msg}
		d.inflight[key] = w
		// The completion runs on the loop: hand the result to every resend, then forget
		// the staged state once the store holds it (or the proposal is lost).
		return func(r paxos.Result) {
			for _, ch := range w.waiters {
				ch <- r
			}
			if d.inflight[key] == w {
				delete(d.inflight, key)
			}
		}
	}
	return ops, staged, nil
}

// oldest is the client to evict: the smallest lastHint not staged now.
func (d *dedupTable) oldest() (string, bool) {
	var victim string
	var best uint64
	found := false
	for c, h := range d.index {
		if d.staged[c] != nil {
			continue
		}
		if !found || h < best || (h == best && c < victim) {
			victim, best, found = c, h, true
		}
	}
	return victim, found
}

// committedVersion finds the version whose value first recorded (client, seq), scanning the
// Paxos log up from hint; 0 when it is no longer there (trimmed) or cannot be read.
func committedVersion(st kvstore.Store, client string, seq, hint uint64) uint64 {
	lcB, err := st.Get(paxos.Bucket, []byte(paxos.KeyLastCommitted))
	if err != nil {
		return 0
	}
	lc, err := kvstore.ParseU64Key(lcB)
	if err != nil {
		return 0
	}
	for v := hint + 1; v <= lc && v <= hint+dedupMaxScan; v++ {
		val, err := st.Get(paxos.Bucket, kvstore.U64Key(v))
		if err != nil || val == nil {
			continue
		}
		tx, err := services.Decode(val)
		if err != nil {
			continue
		}
		for _, op := range tx.GetOps() {
			if op.GetBucket() != kvstore.BucketDedup || op.GetKind() != minimonv1.StoreOp_PUT || string(op.GetKey()) != client {
				continue
			}
			if r, err := decodeDedupRecord(op.GetValue()); err == nil {
				if _, ok := r.find(seq); ok {
					return v
				}
			}
		}
	}
	return 0
}

// writeIDOf extracts the WriteID of a write request (nil when it has none).
func writeIDOf(req any) *minimonv1.WriteID {
	if w, ok := req.(interface{ GetWriteId() *minimonv1.WriteID }); ok {
		return w.GetWriteId()
	}
	return nil
}

// dedupTab is the loop's dedup table (created on first use).
func (m *Monitor) dedupTab() *dedupTable {
	if m.l.dedup == nil {
		m.l.dedup = newDedupTable()
	}
	return m.l.dedup
}

// proposeWrite proposes a write's value (on the loop) and, once it is queued, registers it
// with the dedup table through stage (nil: not deduplicated). The returned channel gets the
// proposal's result.
func (m *Monitor) proposeWrite(now time.Time, val []byte, stage func() func(paxos.Result)) (chan paxos.Result, error) {
	ch := make(chan paxos.Result, 1)
	var onDone func(paxos.Result)
	var early *paxos.Result
	err := m.l.node.Propose(now, val, func(r paxos.Result) {
		ch <- r
		if onDone != nil {
			onDone(r)
		} else {
			early = &r
		}
	})
	if err != nil {
		return nil, err
	}
	if stage != nil && (early == nil || early.Err == nil) {
		// A proposal that already failed (stepped down inside Propose) stages nothing: the
		// step-down's discard has run, and a staged record would answer a resend as applied.
		onDone = stage()
		if early != nil {
			onDone(*early)
		}
	}
	return ch, nil
}
