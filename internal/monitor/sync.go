package monitor

// Streaming store sync (ceph-mon-spec.md section 3, design.md 4.9).
//
// # Why the result is consistent without a snapshot
//
// kvstore.Store gives no read snapshot that lasts across calls: every Export is its own read
// transaction. The provider therefore sends a fuzzy copy followed by the Paxos versions
// committed while it was taken, and the requester replays them, as Ceph's full sync does
// (spec 3.5 step 1):
//
//  1. The provider reads its last_committed lc0 before its first Export.
//  2. It streams Export chunks. Chunk i covers the key interval [start_i, start_i+1) as one read
//     transaction at some moment t_i, so every key position, present or absent, is observed
//     exactly once, at a version c_k with lc0 <= c_k <= lc1 (the provider's lc only grows).
//  3. After the copy it reads first_committed/last_committed (fc1, lc1) in one Export call (one
//     read transaction, so they agree) and sends versions lc0+1 .. lc1 (paxos/<v>), or refuses
//     with OutOfRange when it has trimmed one of them.
//  4. The requester applies each version v as the commit does (design.md 3): put paxos/<v>, the
//     value's ops, put last_committed = v; then puts first_committed = fc1, erases the
//     provider's acceptor keys (pending_v, pending_pn, versions above lc1) and the marker.
//
// Every replicated key changes only by committing a version, and every op (PUT, ERASE,
// ERASE_RANGE) is a blind write: its result does not depend on the old value. So after the
// replay a key written by some version in (lc0, lc1] holds what the last such write left, which
// is its value at lc1; a key no version in (lc0, lc1] wrote had one value throughout [lc0, lc1],
// and that is what the copy observed. The store therefore equals the provider's replicated state
// at lc1, with paxos first_committed/last_committed = fc1/lc1 read in the same snapshot.
// Replaying a version twice is harmless for the same reason, so a resumed stream only needs to
// start replaying above what the requester has replayed already.
//
// Resume goes to the same provider (Run takes one client): its lc never decreases (a provider
// that is itself synchronizing refuses), so observations of every stream lie in [first lc0,
// last lc1]. The daemon must stop serving Sync (SyncProvider.Busy, or cancel the streams)
// before it starts a sync of its own store.
//
// Not copied and not wiped: bucket meta (the store's identity and the marker) and bucket
// election (this member's own epoch: taking a lower one from the provider would let it ack a
// second candidate in an epoch it already acked; Ceph keeps it in the unsynced "monitor"
// prefix). The provider's accepted_pn and last_pn are copied as Ceph does: a higher promise or
// pn floor only makes this member more conservative. Losing this member's own promises and
// accepts by the wipe is the store amnesia of design.md 4a rule 10.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// Chunk bounds (Ceph's mon_sync_max_payload_size and mon_sync_max_payload_keys).
const (
	MonSyncMaxPayloadSize = 1 << 20
	MonSyncMaxPayloadKeys = 2000
)

// syncLocalBuckets are never copied nor wiped by sync (see the package comment above).
var syncLocalBuckets = []string{kvstore.BucketElection, kvstore.BucketMeta}

// SyncInProgress reports whether st holds the marker of an interrupted sync. A monitor that
// finds it at start-up must sync again from scratch and never vote or serve before that.
// A read error counts as in progress: a store we cannot read is not one to serve from.
func SyncInProgress(st kvstore.Store) bool {
	v, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress))
	return err != nil || v != nil
}

// SyncFloor returns the floor persisted with the marker (spec 3.7 sync_last_committed_floor):
// the last_committed this member had before it wiped its store. Providers below it must not
// be used. ok is false when no sync is in progress.
func SyncFloor(st kvstore.Store) (floor uint64, ok bool, err error) {
	v, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress))
	if err != nil || v == nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, true, nil // a marker without a readable floor still means "sync again"
	}
	f, _ := kvstore.ParseU64Key(v)
	return f, true, nil
}

// readU64 reads an 8-byte paxos counter; absent is 0.
func readU64(st kvstore.Store, key string) (uint64, error) {
	v, err := st.Get(paxos.Bucket, []byte(key))
	if err != nil || v == nil {
		return 0, err
	}
	n, err := kvstore.ParseU64Key(v)
	if err != nil {
		return 0, fmt.Errorf("paxos/%s: %w", key, err)
	}
	return n, nil
}

// readCommitted reads first_committed and last_committed in one read transaction: Export from
// "first_committed" with two keys is one snapshot, and no paxos key sorts between the two.
func readCommitted(st kvstore.Store) (fc, lc uint64, err error) {
	c, err := st.Export(paxos.Bucket, []byte(paxos.KeyFirstCommitted), 0, 2)
	if err != nil {
		return 0, 0, err
	}
	for _, p := range c.GetPairs() {
		if p.GetBucket() != paxos.Bucket {
			continue
		}
		var dst *uint64
		switch string(p.GetKey()) {
		case paxos.KeyFirstCommitted:
			dst = &fc
		case paxos.KeyLastCommitted:
			dst = &lc
		default:
			continue
		}
		if *dst, err = kvstore.ParseU64Key(p.GetValue()); err != nil {
			return 0, 0, fmt.Errorf("paxos/%s: %w", p.GetKey(), err)
		}
	}
	return fc, lc, nil
}

// nextBucket returns the smallest bucket name after name, to skip a whole bucket.
func nextBucket(name string) string { return name + "\x00" }

// ---- provider ----

// SyncProvider serves Peer.Sync from a store. Its Sync method has the PeerServer signature so
// the daemon's Peer server can delegate to it.
type SyncProvider struct {
	FSID  string
	Store kvstore.Store
	// Caps on the chunk bounds a requester may ask for; 0 means MonSyncMaxPayloadSize and
	// MonSyncMaxPayloadKeys.
	MaxBytes, MaxKeys int
	// Busy, if set, reports that this monitor cannot serve (it is synchronizing itself, or is
	// shutting down); it is checked before every chunk.
	Busy   func() bool
	Logger *zap.Logger
}

func (p *SyncProvider) bounds(req *minimonv1.SyncRequest) (maxBytes, maxKeys int) {
	maxBytes, maxKeys = p.MaxBytes, p.MaxKeys
	if maxBytes <= 0 {
		maxBytes = MonSyncMaxPayloadSize
	}
	if maxKeys <= 0 {
		maxKeys = MonSyncMaxPayloadKeys
	}
	if b := int(req.GetMaxBytes()); b > 0 && b < maxBytes {
		maxBytes = b
	}
	if k := int(req.GetMaxKeys()); k > 0 && k < maxKeys {
		maxKeys = k
	}
	return maxBytes, maxKeys
}

func (p *SyncProvider) busy() error {
	if p.Busy != nil && p.Busy() {
		return status.Error(codes.Unavailable, "monitor: sync provider is busy (synchronizing itself or stopping)")
	}
	if SyncInProgress(p.Store) {
		return status.Error(codes.Unavailable, "monitor: sync provider's own store is being synchronized")
	}
	return nil
}

func storeErr(what string, err error) error {
	return status.Errorf(codes.Internal, "monitor: sync: %s: %v", what, err)
}

// Sync implements Peer.Sync.
func (p *SyncProvider) Sync(req *minimonv1.SyncRequest, stream grpc.ServerStreamingServer[minimonv1.SyncChunk]) error {
	if req.GetFsid() != p.FSID {
		return status.Errorf(codes.PermissionDenied, "monitor: sync request of cluster %q, this is %q", req.GetFsid(), p.FSID)
	}
	if err := p.busy(); err != nil {
		return err
	}
	fc0, lc0, err := readCommitted(p.Store)
	if err != nil {
		return storeErr("read last_committed", err)
	}
	if lc0 < req.GetFloor() {
		return status.Errorf(codes.FailedPrecondition,
			"monitor: sync provider's last_committed %d is below the requester's floor %d", lc0, req.GetFloor())
	}
	replayFrom := lc0
	if req.GetResume() {
		if req.GetReplayFrom() > lc0 {
			return status.Errorf(codes.FailedPrecondition,
				"monitor: resume replays from %d, above this provider's last_committed %d", req.GetReplayFrom(), lc0)
		}
		replayFrom = req.GetReplayFrom()
	}
	maxBytes, maxKeys := p.bounds(req)
	ctx := stream.Context()
	hdr := func(c *minimonv1.SyncChunk) *minimonv1.SyncChunk {
		c.LastCommitted, c.FirstCommitted = replayFrom, fc0
		return c
	}

	// Copy phase.
	bucket, key := req.GetStartBucket(), req.GetStartKey()
	for done := req.GetCopyDone(); !done; {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		if err := p.busy(); err != nil {
			return err
		}
		if slices.Contains(syncLocalBuckets, bucket) {
			bucket, key = nextBucket(bucket), nil
		}
		c, err := p.Store.Export(bucket, key, maxBytes, maxKeys)
		if err != nil {
			return storeErr("export", err)
		}
		out := &minimonv1.ExportChunk{Done: c.GetDone(), NextBucket: c.GetNextBucket(), NextKey: c.GetNextKey()}
		for _, pr := range c.GetPairs() {
			if !slices.Contains(syncLocalBuckets, pr.GetBucket()) {
				out.Pairs = append(out.Pairs, pr)
			}
		}
		if slices.Contains(syncLocalBuckets, out.NextBucket) {
			out.NextBucket, out.NextKey = nextBucket(out.NextBucket), nil
		}
		done = out.Done
		bucket, key = out.NextBucket, out.NextKey
		if len(out.Pairs) == 0 && !done {
			continue // only local buckets in this piece: nothing to send yet
		}
		if err := stream.Send(hdr(&minimonv1.SyncChunk{Chunk: out})); err != nil {
			return err
		}
	}

	// Catch-up phase: the versions committed since replayFrom, then the snapshot of fc/lc.
	if err := p.busy(); err != nil {
		return err
	}
	fc1, lc1, err := readCommitted(p.Store)
	if err != nil {
		return storeErr("read last_committed", err)
	}
	if lc1 < lc0 {
		return status.Errorf(codes.Aborted, "monitor: sync provider's last_committed went back from %d to %d", lc0, lc1)
	}
	v := replayFrom + 1
	for {
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		c := hdr(&minimonv1.SyncChunk{})
		size := 0
		for ; v <= lc1 && len(c.Versions) < maxKeys; v++ {
			val, err := p.Store.Get(paxos.Bucket, kvstore.U64Key(v))
			if err != nil {
				return storeErr("read version", err)
			}
			if val == nil {
				return status.Errorf(codes.OutOfRange,
					"monitor: sync provider has trimmed version %d (first_committed now %d): sync again from scratch", v, fc1)
			}
			if len(c.Versions) > 0 && size+len(val)+8 > maxBytes {
				break
			}
			size += len(val) + 8
			c.Versions = append(c.Versions, &minimonv1.SyncVersion{Version: v, Value: val})
		}
		if v > lc1 {
			c.Last, c.EndFirstCommitted, c.EndLastCommitted = true, fc1, lc1
		}
		if err := stream.Send(c); err != nil {
			return err
		}
		if c.Last {
			if p.Logger != nil {
				p.Logger.Info("sync served", zap.String("to", req.GetName()), zap.Uint64("from_lc", replayFrom),
					zap.Uint64("lc", lc1), zap.Bool("resume", req.GetResume()))
			}
			return nil
		}
	}
}

// ---- requester ----

// Errors of the requester.
var (
	// ErrSyncProtocol: the provider sent a stream that breaks the contract (versions out of
	// order, a value that does not decode, a final lc below the floor).
	ErrSyncProtocol = errors.New("monitor: sync: provider broke the protocol")
	// errSyncStopped is returned by the test hook to simulate a requester killed mid-sync.
	errSyncStopped = errors.New("monitor: sync stopped")
)

// SyncRequester copies a provider's store into dst (full sync, spec 3.2-3.5).
type SyncRequester struct {
	FSID, Name string
	// Floor is the last_committed the caller knows of (its own before the sync); the floor
	// persisted with an existing marker and dst's own last_committed are added to it.
	Floor uint64
	// MaxBytes and MaxKeys are asked of the provider (0: its defaults).
	MaxBytes, MaxKeys uint32
	// MaxAttempts bounds the calls one Run makes (resumes and fresh restarts); 0 means 5.
	MaxAttempts int
	// RetryDelay is the pause before a resume; 0 means 50ms.
	RetryDelay time.Duration
	Logger     *zap.Logger

	// afterChunk, for tests, runs after chunk n (1-based, across attempts) is applied; an
	// error stops Run as a killed process would.
	afterChunk func(n int) error
}

// SyncResult tells what Run produced.
type SyncResult struct {
	FirstCommitted, LastCommitted uint64 // dst's paxos state: it equals the provider's at this lc
	Chunks                        int    // chunks applied
	Attempts                      int    // Sync calls made
}

// session is the requester's progress through one full sync.
type syncSession struct {
	started    bool   // the first chunk arrived and dst was wiped
	bucket     string // copy resume point
	key        []byte
	copyDone   bool
	replayed   uint64 // versions up to here are applied (or covered by the copy)
	floor      uint64
	chunkCount int
}

// retryable reports whether a failed call may be resumed or restarted on the same provider.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.OutOfRange, codes.DeadlineExceeded, codes.ResourceExhausted,
		codes.Internal, codes.Unknown:
		return true
	}
	return false
}

// Run performs a full sync of dst from the provider behind client. It touches dst only once the
// provider has accepted (the first chunk arrived): then it writes the marker (with the floor)
// and wipes every bucket except meta and election in one transaction; each chunk is then
// applied atomically; the last chunk's transaction also clears the marker. When Run fails after
// the wipe, the marker stays: dst must not be used until a later sync succeeds.
func (r *SyncRequester) Run(ctx context.Context, client minimonv1.PeerClient, dst kvstore.Store) (SyncResult, error) {
	var res SyncResult
	floor := r.Floor
	if f, ok, err := SyncFloor(dst); err != nil {
		return res, fmt.Errorf("monitor: sync: read marker: %w", err)
	} else if ok {
		floor = max(floor, f)
	}
	lc, err := readU64(dst, paxos.KeyLastCommitted)
	if err != nil {
		return res, fmt.Errorf("monitor: sync: read last_committed: %w", err)
	}
	s := &syncSession{floor: max(floor, lc)}
	attempts := r.MaxAttempts
	if attempts <= 0 {
		attempts = 5
	}
	delay := r.RetryDelay
	if delay <= 0 {
		delay = 50 * time.Millisecond
	}
	for {
		res.Attempts++
		done, err := r.stream(ctx, client, dst, s, &res)
		if done {
			return res, nil
		}
		if err == nil {
			err = fmt.Errorf("%w: stream ended before the last chunk", ErrSyncProtocol)
		}
		if errors.Is(err, errSyncStopped) || ctx.Err() != nil || res.Attempts >= attempts ||
			(!retryable(err) && !errors.Is(err, ErrSyncProtocol)) {
			return res, err
		}
		if status.Code(err) == codes.OutOfRange || errors.Is(err, ErrSyncProtocol) {
			// The versions to replay are gone, or the stream was garbage: start over. The
			// marker stays set; the next first chunk wipes again.
			*s = syncSession{floor: s.floor}
		}
		if r.Logger != nil {
			r.Logger.Warn("sync stream failed, retrying", zap.Error(err), zap.Bool("resume", s.started),
				zap.Int("attempt", res.Attempts))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		case <-t.C:
		}
	}
}

// stream makes one Sync call and applies its chunks; done reports the sync finished.
func (r *SyncRequester) stream(ctx context.Context, client minimonv1.PeerClient, dst kvstore.Store,
	s *syncSession, res *SyncResult) (done bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call on every return, so no stream goroutine outlives it
	req := &minimonv1.SyncRequest{
		Fsid: r.FSID, Name: r.Name, Floor: max(s.floor, s.replayed),
		MaxBytes: r.MaxBytes, MaxKeys: r.MaxKeys,
	}
	if s.started {
		req.Resume, req.ReplayFrom, req.CopyDone = true, s.replayed, s.copyDone
		req.StartBucket, req.StartKey = s.bucket, s.key
	}
	st, err := client.Sync(ctx, req)
	if err != nil {
		return false, err
	}
	first, streamLC := true, uint64(0)
	for {
		c, err := st.Recv()
		if err != nil {
			return false, err
		}
		switch {
		case first && !s.started:
			if err := r.begin(dst, s, c); err != nil {
				return false, err
			}
		case first && c.GetLastCommitted() != req.GetReplayFrom():
			return false, fmt.Errorf("%w: resumed stream replays from %d, asked for %d",
				ErrSyncProtocol, c.GetLastCommitted(), req.GetReplayFrom())
		case !first && c.GetLastCommitted() != streamLC:
			return false, fmt.Errorf("%w: replay point changed from %d to %d within a stream",
				ErrSyncProtocol, streamLC, c.GetLastCommitted())
		}
		if first {
			streamLC = c.GetLastCommitted()
		}
		first = false
		last, err := r.apply(dst, s, c)
		if err != nil {
			return false, err
		}
		s.chunkCount++
		res.Chunks = s.chunkCount
		if last {
			res.FirstCommitted, res.LastCommitted = c.GetEndFirstCommitted(), c.GetEndLastCommitted()
			if r.Logger != nil {
				r.Logger.Info("sync done", zap.Uint64("lc", res.LastCommitted), zap.Int("chunks", res.Chunks))
			}
			return true, nil
		}
		if r.afterChunk != nil {
			if err := r.afterChunk(s.chunkCount); err != nil {
				return false, err
			}
		}
	}
}

// begin writes the marker (with the floor) and wipes dst in one transaction: a crash leaves
// either the old store without a marker, or a wiped store with it.
func (r *SyncRequester) begin(dst kvstore.Store, s *syncSession, c *minimonv1.SyncChunk) error {
	if c.GetLastCommitted() < s.floor {
		return status.Errorf(codes.FailedPrecondition,
			"monitor: sync provider's last_committed %d is below our floor %d", c.GetLastCommitted(), s.floor)
	}
	tx, err := kvstore.ClearTransaction(dst, syncLocalBuckets...)
	if err != nil {
		return fmt.Errorf("monitor: sync: %w", err)
	}
	tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketMeta,
		Key: []byte(kvstore.KeySyncInProgress), Value: kvstore.U64Key(s.floor)})
	if err := dst.Apply(tx); err != nil {
		return fmt.Errorf("monitor: sync: wipe: %w", err)
	}
	s.started, s.replayed = true, c.GetLastCommitted()
	return nil
}

// apply writes one chunk atomically: its copied pairs, its versions replayed as commits and,
// in the last chunk, the final paxos state and the marker's removal.
func (r *SyncRequester) apply(dst kvstore.Store, s *syncSession, c *minimonv1.SyncChunk) (last bool, err error) {
	tx := &minimonv1.Transaction{}
	if ch := c.GetChunk(); ch != nil {
		if s.copyDone && len(ch.GetPairs()) > 0 {
			return false, fmt.Errorf("%w: copied pairs after the copy ended", ErrSyncProtocol)
		}
		for _, p := range ch.GetPairs() {
			if slices.Contains(syncLocalBuckets, p.GetBucket()) {
				return false, fmt.Errorf("%w: pair of local bucket %q", ErrSyncProtocol, p.GetBucket())
			}
			tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: p.GetBucket(),
				Key: p.GetKey(), Value: p.GetValue()})
		}
	}
	replayed := s.replayed
	for _, v := range c.GetVersions() {
		if v.GetVersion() != replayed+1 {
			return false, fmt.Errorf("%w: version %d after %d", ErrSyncProtocol, v.GetVersion(), replayed)
		}
		var vt minimonv1.Transaction
		if err := proto.Unmarshal(v.GetValue(), &vt); err != nil {
			return false, fmt.Errorf("%w: version %d does not decode: %v", ErrSyncProtocol, v.GetVersion(), err)
		}
		// The commit of version v (design.md 3): paxos/<v>, the value's ops, last_committed.
		tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: paxos.Bucket,
			Key: kvstore.U64Key(v.GetVersion()), Value: v.GetValue()})
		tx.Ops = append(tx.Ops, vt.GetOps()...)
		tx.Ops = append(tx.Ops, putPaxosU64(paxos.KeyLastCommitted, v.GetVersion()))
		replayed++
	}
	if c.GetLast() {
		fc, lc := c.GetEndFirstCommitted(), c.GetEndLastCommitted()
		switch {
		case !s.copyDone && !c.GetChunk().GetDone():
			return false, fmt.Errorf("%w: last chunk before the copy ended", ErrSyncProtocol)
		case lc != replayed:
			return false, fmt.Errorf("%w: last chunk ends at %d, replayed to %d", ErrSyncProtocol, lc, replayed)
		case lc < s.floor:
			return false, fmt.Errorf("%w: final last_committed %d below floor %d", ErrSyncProtocol, lc, s.floor)
		case fc > lc:
			return false, fmt.Errorf("%w: final first_committed %d above last_committed %d", ErrSyncProtocol, fc, lc)
		}
		fin, err := finishOps(dst, fc, lc)
		if err != nil {
			return false, err
		}
		tx.Ops = append(tx.Ops, fin...)
	}
	if len(tx.Ops) > 0 {
		if err := dst.Apply(tx); err != nil {
			return false, fmt.Errorf("monitor: sync: apply chunk: %w", err)
		}
	}
	s.replayed = replayed
	if ch := c.GetChunk(); ch != nil && !s.copyDone {
		s.bucket, s.key, s.copyDone = ch.GetNextBucket(), ch.GetNextKey(), ch.GetDone()
	}
	return c.GetLast(), nil
}

func putPaxosU64(key string, v uint64) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: paxos.Bucket, Key: []byte(key), Value: kvstore.U64Key(v)}
}

// finishOps sets the final paxos state and drops what belongs to the provider's acceptor, not
// to the committed state: its pending value marker and any accepted version above lc.
func finishOps(dst kvstore.Store, fc, lc uint64) ([]*minimonv1.StoreOp, error) {
	var ops []*minimonv1.StoreOp
	erase := func(b string, k []byte) {
		ops = append(ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE, Bucket: b, Key: k})
	}
	// Version keys are the only 8-byte keys of the paxos bucket.
	err := dst.ForEach(paxos.Bucket, kvstore.U64Key(lc+1), func(k, _ []byte) error {
		if len(k) == 8 {
			erase(paxos.Bucket, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("monitor: sync: %w", err)
	}
	erase(paxos.Bucket, []byte(paxos.KeyPendingV))
	erase(paxos.Bucket, []byte(paxos.KeyPendingPN))
	if fc > 0 {
		ops = append(ops, putPaxosU64(paxos.KeyFirstCommitted, fc))
	} else {
		erase(paxos.Bucket, []byte(paxos.KeyFirstCommitted))
	}
	if lc > 0 {
		ops = append(ops, putPaxosU64(paxos.KeyLastCommitted, lc))
	} else {
		erase(paxos.Bucket, []byte(paxos.KeyLastCommitted))
	}
	erase(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress))
	return ops, nil
}
