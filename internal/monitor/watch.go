package monitor

// The Watch server stream (design.md section 5; Ceph's subscriptions, spec 6.10; scenario
// 44): a watcher gets the current state first, then every change once per version, in order.
//
// Where events come from:
//   - Live: the loop's commit hook (watchCommit, called from onCommit once the committed values
//     are durable and applied) turns each committed value into the event of every watcher and
//     puts it into the watcher's bounded queue without blocking. The stream's sender goroutine
//     does the (blocking) gRPC sends. A queue that fills ends that stream with
//     ResourceExhausted: memory stays bounded whatever the client does.
//   - History: a watch resuming after from_version replays the committed Paxos values
//     (paxos/<v> for v in (from_version, last_committed]), decoding each transaction and keeping
//     its ops for the watched target. When a version needed is trimmed, it gets a snapshot.
//
// Consistency of a snapshot: the loop reads the store's last_committed before and after
// reading the state, and takes the snapshot only when both agree, so the snapshot is the state
// at exactly that version (a commit whose completion has not reached the loop yet is then
// already in the snapshot and its live event is skipped: its version is not above the
// watcher's). Config watchers get the entity's effective map whenever a commit touching the
// config bucket changes it; the store holds the state after a whole batch of commits, so
// changes inside one batch are folded into one event at the batch's last config version.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// Watch limits.
const (
	// maxWatches bounds the watches one monitor serves at once; more get ResourceExhausted.
	maxWatches = 1024
	// defaultWatchQueueLen bounds the events waiting for one watcher's sender.
	defaultWatchQueueLen = 256
	// watchQueueBytes bounds the encoded bytes waiting for one watcher's sender (events of
	// 64 KiB values would otherwise hold 16 MiB per watcher).
	watchQueueBytes = 4 << 20
	// maxWatchSnapshot bounds a kv snapshot event: it must fit the client's default 4 MiB
	// receive limit, and a snapshot is one event (the client drops repeats of a version).
	maxWatchSnapshot = 4<<20 - 64<<10
	// watchCatchUpRounds bounds the rounds of replay outside the loop before a watch that
	// cannot catch up with the commits takes a snapshot instead.
	watchCatchUpRounds = 4
	// watchDrainGrace bounds sending what is queued when a watch ends for a reason other than
	// falling behind (the monitor left the quorum).
	watchDrainGrace = time.Second
)

// Watch targets.
const (
	WatchMonmap = "monmap"
	WatchConfig = "config"
	WatchKV     = "kv"
)

var errWatchUnavailable = status.Error(codes.Unavailable, "watch: this monitor left the quorum; watch another")

// watchSpec is what one watch follows.
type watchSpec struct {
	target string
	who    string // config: the entity
	prefix string // kv: the key prefix ("" is every key)
}

func parseWatch(req *minimonv1.WatchRequest) (watchSpec, error) {
	s := watchSpec{target: req.GetTarget(), who: req.GetWho(), prefix: req.GetPrefix()}
	// monctl and older clients may spell the kv target "kv:<prefix>" (Ceph's subscription name).
	if p, ok := strings.CutPrefix(s.target, WatchKV+":"); ok && s.prefix == "" {
		s.target, s.prefix = WatchKV, p
	}
	switch s.target {
	case WatchMonmap:
	case WatchConfig:
		if s.who == "" {
			return s, status.Error(codes.InvalidArgument, "watch config: who (the entity) is required")
		}
		if _, err := services.ParseWho(s.who); err != nil {
			return s, status.Errorf(codes.InvalidArgument, "watch config: %v", err)
		}
	case WatchKV:
		if len(s.prefix) > services.MaxKeyLen {
			return s, status.Errorf(codes.InvalidArgument, "watch kv: prefix of %d bytes exceeds %d", len(s.prefix), services.MaxKeyLen)
		}
	default:
		return s, status.Errorf(codes.InvalidArgument, "watch: unknown target %q (monmap, config or kv)", s.target)
	}
	return s, nil
}

// queued is an event in a watcher's queue with its encoded size.
type queued struct {
	ev   *minimonv1.WatchEvent
	size int64
}

// watcher is one attached watch.
type watcher struct {
	spec watchSpec
	q    chan queued
	end  chan struct{} // closed by the loop when the watch ends; err and fellBehind set before

	err        error
	fellBehind bool

	bytes atomic.Int64  // encoded bytes in q
	sent  atomic.Uint64 // version of the last event sent

	// Owned by the loop.
	last  uint64            // every version up to last is delivered or skipped
	cfg   map[string]string // config: the effective map last sent
	ended bool
}

// watchHub is the loop's set of watchers (in loopState).
type watchHub struct {
	watchers map[*watcher]struct{}
	queueLen int              // per-watcher queue length; 0: defaultWatchQueueLen (tests lower it)
	limit    int              // most watches at once; 0: maxWatches (tests lower it)
	config   *services.Config // reads effective options for config watchers
}

func (h *watchHub) watchLimit() int {
	if h.limit > 0 {
		return h.limit
	}
	return maxWatches
}

func (h *watchHub) qlen() int {
	if h.queueLen > 0 {
		return h.queueLen
	}
	return defaultWatchQueueLen
}

// Watch serves one watch: catch up (replay or snapshot), attach to the loop, then stream.
func (s *clientServer) Watch(req *minimonv1.WatchRequest, stream grpc.ServerStreamingServer[minimonv1.WatchEvent]) error {
	m := s.m
	spec, err := parseWatch(req)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	from := req.GetFromVersion()
	last, snapshot := from, from == 0
	var cfgAt uint64 // config: the last replayed version that touched the config bucket
	var w *watcher
	var initial []*minimonv1.WatchEvent
	for round := 0; w == nil; round++ {
		if !snapshot {
			// Replay the history outside the loop, sending as we read: the loop only replays
			// the few versions committed meanwhile.
			ok, err := m.watchCatchUp(ctx, stream, spec, &last, &cfgAt)
			if err != nil {
				return err
			}
			snapshot = !ok
		}
		var catchUp bool
		w, initial, catchUp, err = m.attachWatch(ctx, spec, from, last, snapshot, cfgAt)
		if err != nil {
			return err
		}
		if catchUp && round+1 >= watchCatchUpRounds {
			snapshot = true // commits outrun the replay: the current state is cheaper
		}
	}
	defer m.detachWatch(w)
	return m.serveWatch(ctx, stream, w, initial)
}

// watchCatchUp waits until this monitor is readable, then replays committed values after
// *last up to the store's last_committed, sending kv and monmap events directly. It returns
// false when the history is trimmed (or cannot be told as changes): the watch needs a
// snapshot.
func (m *Monitor) watchCatchUp(ctx context.Context, stream grpc.ServerStreamingServer[minimonv1.WatchEvent],
	spec watchSpec, last, cfgAt *uint64) (bool, error) {
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	if err := m.await(wctx, func(now time.Time) bool { return m.l.node.Readable(now) }); err != nil {
		return false, waitErr(ctx, err, "no quorum: this monitor cannot serve watches now")
	}
	lc, err := readU64(m.store, paxos.KeyLastCommitted)
	if err != nil {
		return false, status.Errorf(codes.Internal, "watch: %v", err)
	}
	var sendErr error
	ok, err := m.replay(*last, lc, func(v uint64, tx *minimonv1.Transaction) bool {
		ev, touchesCfg, resync := spec.eventOf(v, tx)
		if resync {
			return false
		}
		if touchesCfg {
			*cfgAt = v
		}
		if ev != nil {
			if sendErr = stream.Send(ev); sendErr != nil {
				return false
			}
		}
		*last = v
		return true
	})
	switch {
	case sendErr != nil:
		return false, sendErr
	case err != nil:
		return false, status.Errorf(codes.Internal, "watch: %v", err)
	}
	return ok, nil
}

// replay calls fn for each committed value in (from, to], in order. It returns false when a
// version is missing (trimmed) or fn returns false.
func (m *Monitor) replay(from, to uint64, fn func(v uint64, tx *minimonv1.Transaction) bool) (bool, error) {
	for v := from + 1; v <= to && v > from; v++ {
		val, err := m.store.Get(paxos.Bucket, kvstore.U64Key(v))
		if err != nil {
			return false, err
		}
		if val == nil {
			return false, nil
		}
		tx, err := services.Decode(val)
		if err != nil {
			return false, nil // never committed by paxos; a snapshot is still right
		}
		if !fn(v, tx) {
			return false, nil
		}
	}
	return true, nil
}

// attachWatch registers a watcher on the loop once this monitor is readable. From a replay at
// last it first replays the versions committed meanwhile (when they are few; otherwise it
// returns catchUp and the caller replays again outside the loop); with snapshot it takes the
// current state. initial holds the events to send before the queued ones.
func (m *Monitor) attachWatch(ctx context.Context, spec watchSpec, from, last uint64, snapshot bool,
	cfgAt uint64) (w *watcher, initial []*minimonv1.WatchEvent, catchUp bool, err error) {
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	var rerr error
	werr := m.await(wctx, func(now time.Time) bool {
		if !m.l.node.Readable(now) {
			return false
		}
		h := &m.l.watch
		if len(h.watchers) >= h.watchLimit() {
			rerr = status.Errorf(codes.ResourceExhausted, "watch: this monitor serves %d watches already; watch another", h.watchLimit())
			return true
		}
		var ok bool
		w, initial, catchUp, ok, rerr = m.attachOnLoop(spec, from, last, snapshot, cfgAt)
		if !ok {
			w, initial, catchUp, rerr = nil, nil, false, nil
			return false // a commit landed while reading: try again at the next change
		}
		return true
	})
	if werr != nil {
		return nil, nil, false, waitErr(ctx, werr, "no quorum: this monitor cannot serve watches now")
	}
	return w, initial, catchUp, toStatus(rerr)
}

// attachOnLoop runs on the loop (readable). ok false: the store moved on while reading.
func (m *Monitor) attachOnLoop(spec watchSpec, from, last uint64, snapshot bool, cfgAt uint64) (
	w *watcher, initial []*minimonv1.WatchEvent, catchUp, ok bool, err error) {
	h := &m.l.watch
	lc, err := readU64(m.store, paxos.KeyLastCommitted)
	if err != nil {
		return nil, nil, false, true, err
	}
	if !snapshot && lc > last {
		if lc-last > uint64(h.qlen()) {
			return nil, nil, true, true, nil
		}
		done, err := m.replay(last, lc, func(v uint64, tx *minimonv1.Transaction) bool {
			ev, touchesCfg, resync := spec.eventOf(v, tx)
			if resync {
				return false
			}
			if touchesCfg {
				cfgAt = v
			}
			if ev != nil {
				initial = append(initial, ev)
			}
			return true
		})
		if err != nil {
			return nil, nil, false, true, err
		}
		if !done {
			snapshot, initial = true, nil
		}
	}
	var eff map[string]string
	if spec.target == WatchConfig {
		if eff, err = m.configEffective(spec.who); err != nil {
			return nil, nil, false, true, err
		}
	}
	if snapshot {
		ev, err := m.watchSnapshot(spec, lc, eff)
		if err != nil {
			return nil, nil, false, true, err
		}
		initial = []*minimonv1.WatchEvent{ev}
	}
	if lc2, err := readU64(m.store, paxos.KeyLastCommitted); err != nil || lc2 != lc {
		return nil, nil, false, err != nil, err
	}
	if spec.target == WatchConfig && !snapshot && cfgAt > from {
		initial = append(initial, &minimonv1.WatchEvent{Version: cfgAt, Config: eff})
	}
	w = &watcher{
		spec: spec, q: make(chan queued, h.qlen()), end: make(chan struct{}),
		last: max(lc, last), cfg: eff,
	}
	if h.watchers == nil {
		h.watchers = map[*watcher]struct{}{}
	}
	h.watchers[w] = struct{}{}
	return w, initial, false, true, nil
}

// watchSnapshot is the current state of spec at version lc (on the loop).
func (m *Monitor) watchSnapshot(spec watchSpec, lc uint64, eff map[string]string) (*minimonv1.WatchEvent, error) {
	ev := &minimonv1.WatchEvent{Version: lc, Snapshot: true}
	switch spec.target {
	case WatchMonmap:
		mm, err := m.l.mm.Latest(m.store)
		switch {
		case errors.Is(err, services.ErrNotFound):
			mm = m.currentMonmap() // the founding map (epoch 0) until epoch 1 commits
		case err != nil:
			return nil, err
		}
		ev.Monmap = mm
	case WatchConfig:
		ev.Config = eff
	case WatchKV:
		size := 0
		errBig := errors.New("too big")
		p := []byte(spec.prefix)
		err := m.store.ForEach(kvstore.BucketKV, p, func(k, v []byte) error {
			if !bytes.HasPrefix(k, p) {
				return errStopWatchScan
			}
			if size += len(k) + len(v) + 16; size > maxWatchSnapshot {
				return errBig
			}
			ev.Kv = append(ev.Kv, &minimonv1.KVChange{Key: string(k), Value: v})
			return nil
		})
		switch {
		case errors.Is(err, errBig):
			return nil, status.Errorf(codes.ResourceExhausted,
				"watch kv: the keys under prefix %q exceed %d bytes; watch a narrower prefix", spec.prefix, maxWatchSnapshot)
		case err != nil && !errors.Is(err, errStopWatchScan):
			return nil, err
		}
	}
	return ev, nil
}

var errStopWatchScan = errors.New("stop")

// eventOf is the event one committed value makes for spec (nil: none). touchesCfg: the value
// writes the config bucket (config watchers compare effective maps). resync: the value changed
// the watched keys in a way that cannot be told as changes (an erase range): the watcher needs
// a snapshot.
func (s watchSpec) eventOf(v uint64, tx *minimonv1.Transaction) (ev *minimonv1.WatchEvent, touchesCfg, resync bool) {
	switch s.target {
	case WatchMonmap:
		if mm := monmapOfTx(tx); mm != nil {
			return &minimonv1.WatchEvent{Version: v, Monmap: mm}, false, false
		}
	case WatchConfig:
		for _, op := range tx.GetOps() {
			if op.GetBucket() == kvstore.BucketConfig {
				return nil, true, false
			}
		}
	case WatchKV:
		var changes []*minimonv1.KVChange
		p := []byte(s.prefix)
		for _, op := range tx.GetOps() {
			if op.GetBucket() != kvstore.BucketKV {
				continue
			}
			switch op.GetKind() {
			case minimonv1.StoreOp_PUT:
				if bytes.HasPrefix(op.GetKey(), p) {
					changes = append(changes, &minimonv1.KVChange{Key: string(op.GetKey()), Value: op.GetValue()})
				}
			case minimonv1.StoreOp_ERASE:
				if bytes.HasPrefix(op.GetKey(), p) {
					changes = append(changes, &minimonv1.KVChange{Key: string(op.GetKey()), Deleted: true})
				}
			case minimonv1.StoreOp_ERASE_RANGE:
				// The service never writes one; should it, the erased keys are unknown here.
				if rangeMeetsPrefix(op.GetKey(), op.GetEnd(), p) {
					return nil, false, true
				}
			}
		}
		if len(changes) > 0 {
			return &minimonv1.WatchEvent{Version: v, Kv: changes}, false, false
		}
	}
	return nil, false, false
}

// rangeMeetsPrefix: [start, end) (end empty: to the last key) holds a key starting with p.
func rangeMeetsPrefix(start, end, p []byte) bool {
	// Keys with prefix p are >= p; the range holds one iff it reaches past p and the first key
	// it holds at or after p still starts with p (or the range starts before p).
	if len(end) > 0 && bytes.Compare(end, p) <= 0 {
		return false
	}
	return bytes.Compare(start, p) <= 0 || bytes.HasPrefix(start, p)
}

// monmapOfTx returns the map a value commits as a new epoch (nil if none).
func monmapOfTx(tx *minimonv1.Transaction) *minimonv1.MonMap {
	for _, op := range tx.GetOps() {
		if op.GetBucket() == kvstore.BucketMonmap && op.GetKind() == minimonv1.StoreOp_PUT && len(op.GetKey()) == 8 {
			mm := &minimonv1.MonMap{}
			if proto.Unmarshal(op.GetValue(), mm) == nil {
				return mm
			}
		}
	}
	return nil
}

// configEffective is the effective option map of an entity (on the loop): WHO's masks name
// the entity's host and device class. The config service's Get reads the store only, so the
// hub keeps a reader of its own.
func (m *Monitor) configEffective(who string) (map[string]string, error) {
	w, err := services.ParseWho(who)
	if err != nil {
		return nil, err
	}
	h := &m.l.watch
	if h.config == nil {
		h.config = services.NewConfig(services.ConfigOptions{})
	}
	entries, err := h.config.Get(m.store, w.Section, "", w.Host, w.Class)
	if err != nil {
		return nil, err
	}
	eff := make(map[string]string, len(entries))
	for _, e := range entries {
		eff[e.GetName()] = e.GetValue()
	}
	return eff, nil
}

// watchCommit is the commit hook (on the loop, from onCommit): every watcher gets the events
// of the committed values after its last version, without blocking.
func (m *Monitor) watchCommit(entries []paxos.Entry) {
	h := &m.l.watch
	if len(h.watchers) == 0 || len(entries) == 0 {
		return
	}
	txs := make([]*minimonv1.Transaction, len(entries))
	for i, e := range entries {
		if tx, err := services.Decode(e.Value); err == nil {
			txs[i] = tx
		}
	}
	effs := map[string]map[string]string{} // config entity -> effective map after this batch
	for w := range h.watchers {
		m.deliver(w, entries, txs, effs)
	}
}

func (m *Monitor) deliver(w *watcher, entries []paxos.Entry, txs []*minimonv1.Transaction, effs map[string]map[string]string) {
	var cfgAt uint64
	for i, e := range entries {
		if e.Version <= w.last {
			continue
		}
		w.last = e.Version
		ev, touchesCfg, resync := w.spec.eventOf(e.Version, txs[i])
		if resync {
			// Aborted: the client reattaches from its last version and the replay takes a
			// snapshot.
			m.endWatch(w, status.Error(codes.Aborted, "watch: keys changed in a way only a snapshot can tell; resume"), false)
			return
		}
		if touchesCfg {
			cfgAt = e.Version
		}
		if ev != nil && !m.enqueue(w, ev) {
			return
		}
	}
	if cfgAt == 0 {
		return
	}
	eff, ok := effs[w.spec.who]
	if !ok {
		var err error
		if eff, err = m.configEffective(w.spec.who); err != nil {
			m.endWatch(w, status.Errorf(codes.Unavailable, "watch config: %v", err), false)
			return
		}
		effs[w.spec.who] = eff
	}
	if !maps.Equal(eff, w.cfg) {
		w.cfg = eff
		m.enqueue(w, &minimonv1.WatchEvent{Version: cfgAt, Config: eff})
	}
}

// enqueue puts ev into w's queue without blocking; a full queue (by events or bytes) ends the
// watch: the client resumes from the last version it got.
func (m *Monitor) enqueue(w *watcher, ev *minimonv1.WatchEvent) bool {
	size := int64(proto.Size(ev))
	if w.bytes.Add(size) <= watchQueueBytes {
		select {
		case w.q <- queued{ev: ev, size: size}:
			return true
		default:
		}
	}
	w.bytes.Add(-size)
	// Aborted, not ResourceExhausted: the client library reattaches on Aborted and resumes from
	// the last version it saw, so a slow reader loses nothing and the server holds nothing.
	m.endWatch(w, status.Errorf(codes.Aborted, "watch fell behind; resume from version %d", w.sent.Load()), true)
	return false
}

// endWatch ends w (on the loop): its stream returns err.
func (m *Monitor) endWatch(w *watcher, err error, fellBehind bool) {
	if w.ended {
		return
	}
	w.ended, w.err, w.fellBehind = true, err, fellBehind
	close(w.end)
	delete(m.l.watch.watchers, w)
}

// endAllWatches ends every watch (on the loop): this monitor left the quorum.
func (m *Monitor) endAllWatches(err error) {
	for w := range m.l.watch.watchers {
		m.endWatch(w, err, false)
	}
}

// detachWatch removes w from the loop after its stream ended.
func (m *Monitor) detachWatch(w *watcher) {
	_ = m.onLoop(context.Background(), func(time.Time) {
		if !w.ended {
			w.ended = true
			delete(m.l.watch.watchers, w)
		}
	})
}

// serveWatch streams w's events until the client leaves, the watch ends or the monitor stops.
// A sender goroutine does the blocking sends, so a client that does not read cannot hold the
// watch open: the handler returns (gRPC then cancels the stream, which unblocks the sender).
func (m *Monitor) serveWatch(ctx context.Context, stream grpc.ServerStreamingServer[minimonv1.WatchEvent],
	w *watcher, initial []*minimonv1.WatchEvent) error {
	done := make(chan error, 1)
	m.bgWG.Add(1) // Run waits for it after the server stopped (which cancels every stream)
	go func() {
		defer m.bgWG.Done()
		done <- w.send(ctx, stream, initial)
	}()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		return w.err
	case <-w.end:
		// Give the sender a moment to finish a Send in progress (and, unless the watch fell
		// behind, what is queued) before the handler returns: returning while another
		// goroutine is inside Send can leave the final status undelivered (a client reading
		// again after the cut once waited 10 s for it). A client that does not read at all
		// costs this grace, nothing more: its queue is no longer fed.
		t := time.NewTimer(watchDrainGrace)
		defer t.Stop()
		select {
		case err := <-done:
			if err != nil {
				return err
			}
		case <-t.C:
		}
		return w.err
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-m.stopping:
		return status.Error(codes.Unavailable, "monitor is shutting down; watch another")
	}
}

// send sends initial, then the queued events, until the watch ends (then what is queued,
// unless it fell behind) or a send fails.
func (w *watcher) send(ctx context.Context, stream grpc.ServerStreamingServer[minimonv1.WatchEvent], initial []*minimonv1.WatchEvent) error {
	for _, ev := range initial {
		if err := stream.Send(ev); err != nil {
			return err
		}
		w.sent.Store(ev.GetVersion())
	}
	out := func(q queued) error {
		w.bytes.Add(-q.size)
		if err := stream.Send(q.ev); err != nil {
			return err
		}
		w.sent.Store(q.ev.GetVersion())
		return nil
	}
	for {
		select {
		case q := <-w.q:
			if err := out(q); err != nil {
				return err
			}
		case <-w.end:
			if w.fellBehind {
				return nil
			}
			for {
				select {
				case q := <-w.q:
					if err := out(q); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// String names a watch in logs and errors.
func (s watchSpec) String() string {
	switch s.target {
	case WatchConfig:
		return fmt.Sprintf("config %s", s.who)
	case WatchKV:
		return fmt.Sprintf("kv:%s", s.prefix)
	}
	return s.target
}

// watchTick (on the loop, every tick) ends the watches of a monitor outside the quorum that
// no role change reported (the node rebuilt for a new member map starts probing).
func (m *Monitor) watchTick() {
	if len(m.l.watch.watchers) > 0 && !m.l.node.Role().InQuorum() {
		m.endAllWatches(errWatchUnavailable)
	}
}
