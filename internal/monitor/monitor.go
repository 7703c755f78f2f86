// Package monitor is the monitor daemon's I/O shell (design.md section 2): it owns the
// goroutines around the pure protocol logic of internal/node (elector + paxos) and the
// services: one event loop goroutine owns the node and the services, a store writer makes the
// node's transactions durable in order, the peer transport carries envelopes, and one gRPC
// server on the monitor's address serves peers (minimon.v1.Peer) and clients
// (minimon.v1.Monitor). No lock guards protocol state: gRPC handlers post closures to the loop.
package monitor

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/services"
)

// StoreFile is the store's file name inside --data-dir.
const StoreFile = "store.db"

// KeyInitialMembers (bucket meta) keeps the founding member map (an epoch-0 MonMap) from the
// first start until the monmap service commits epoch 1, so a restart in between needs no flags.
const KeyInitialMembers = "initial_members"

// Sentinel errors of New and Run.
var (
	// ErrRemoved: this monitor is no longer in the committed member map (Run returns it; the
	// daemon exits with status 0 so a supervisor does not restart it).
	ErrRemoved  = errors.New("monitor: removed from the monmap")
	errStopping = errors.New("monitor: shutting down")
)

// shutdownGrace bounds GracefulStop: a client stream that will not end must not hold up exit.
const shutdownGrace = 2 * time.Second

// tickInterval drives node.Tick; well below the renew interval (0.1 s by default).
const tickInterval = 10 * time.Millisecond

// Option adjusts New; the daemon passes none.
type Option func(*options)

type options struct {
	lis         net.Listener
	ctx         context.Context // bounds the --join start-up (membership.go); nil: Background
	joinTimeout time.Duration   // 0: DefaultJoinTimeout
}

// WithListener serves on lis instead of listening on cfg.Addr (tests bind 127.0.0.1:0 first,
// so the addresses of the member map are known before any monitor starts).
func WithListener(lis net.Listener) Option { return func(o *options) { o.lis = lis } }

// Monitor is one running monitor. Create it with New, serve with Run.
type Monitor struct {
	cfg   Config
	lg    *zap.Logger
	store *kvstore.DB
	fsid  string
	lis   net.Listener
	tr    *Transport
	srv   *grpc.Server
	hs    *health.Server
	met   *metrics

	started atomic.Bool
	ready   atomic.Bool // in quorum (leader or peon)
	syncing atomic.Bool // a full sync of our own store runs: do not serve Sync to others

	// bg bounds the goroutines Run starts besides the loop (the sync requester); Run cancels
	// it and waits for them before closing the store they write.
	bg       context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	events    chan func()   // closures posted to the loop (client requests)
	writeDone chan []func() // store completions, in issue order
	fatal     chan error    // a store write failed
	stopping  chan struct{} // closed when Run starts to stop
	loopGone  chan struct{} // closed when the loop has returned

	fp failpoints // test-only crash points (failpoint.go)

	backup backupState // the one running Backup (backup.go)

	fwdMu    sync.Mutex
	fwdConns map[string]*grpc.ClientConn // monitor address -> connection for Forward and Sync

	l loopState // owned by the event loop
}

// New opens (creating on the first start) the store in cfg.DataDir, checks its identity
// against the flags, and builds the transport and the gRPC server. Nothing runs until Run.
func New(cfg Config, lg *zap.Logger, opts ...Option) (_ *Monitor, err error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	var o options
	for _, f := range opts {
		f(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("monitor: data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, StoreFile)
	st, err := kvstore.Open(path, kvstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("monitor: cannot open the store: %w", err)
	}
	defer func() {
		if err != nil {
			_ = st.Close()
		}
	}()
	lg = lg.With(zap.String("mon", cfg.Name))
	var fsid string
	var mm *minimonv1.MonMap
	if len(cfg.Join) > 0 {
		fsid, mm, err = joinStart(o, st, &cfg, lg)
	} else {
		fsid, mm, err = loadIdentity(st, &cfg)
	}
	if err != nil {
		return nil, err
	}
	rank := rankOf(mm, cfg.Name)
	if rank < 0 {
		return nil, fmt.Errorf("%w: mon.%s is not in monmap epoch %d", ErrRemoved, cfg.Name, mm.GetEpoch())
	}

	lis := o.lis
	if lis == nil {
		if lis, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("monitor: listen on %s: %w", cfg.Addr, err)
		}
	}
	defer func() {
		if err != nil {
			_ = lis.Close()
		}
	}()
	tr, err := NewTransport(TransportConfig{Name: cfg.Name, Rank: rank, FSID: fsid, Peers: peersOf(mm), Logger: lg,
		DialOptions: peerDialOptions(cfg.Addr)})
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg: cfg, lg: lg, store: st, fsid: fsid, lis: lis, tr: tr,
		met:       newMetrics(path),
		events:    make(chan func(), 1024),
		writeDone: make(chan []func(), 64),
		fatal:     make(chan error, 1),
		stopping:  make(chan struct{}),
		loopGone:  make(chan struct{}),
		fwdConns:  map[string]*grpc.ClientConn{},
	}
	m.l.rank = rank
	m.l.monmap = mm
	m.l.mm = services.NewMonmap()
	m.l.mm.Now = time.Now
	m.l.kv = services.NewKV(services.KVOptions{MaxEntrySize: cfg.MonConfigKeyMaxEntrySize})
	if err := m.l.mm.Refresh(st); err != nil {
		_ = tr.Close()
		return nil, fmt.Errorf("monitor: load the monmap: %w", err)
	}
	m.l.cfg = services.NewConfig(services.ConfigOptions{
		MaxValueSize: cfg.MonConfigKeyMaxEntrySize, HistoryKeep: cfg.MonConfigHistoryKeep})
	m.l.cfg.Now = time.Now
	if err := m.l.cfg.Refresh(st); err != nil {
		_ = tr.Close()
		return nil, fmt.Errorf("monitor: load the central config: %w", err)
	}
	m.srv, m.hs = m.newGRPCServer()
	return m, nil
}

// loadIdentity checks (or, on the first start, writes) the store's meta bucket and returns the
// fsid and the member map in force: the latest committed monmap, or the founding map.
func loadIdentity(st *kvstore.DB, cfg *Config) (string, *minimonv1.MonMap, error) {
	path := st.Path()
	fsidB, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeyFSID))
	if err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	}
	if fsidB == nil {
		return firstStart(st, cfg)
	}
	fsid := string(fsidB)
	if cfg.FSID != "" && !strings.EqualFold(cfg.FSID, fsid) {
		return "", nil, fmt.Errorf("monitor: store %s belongs to cluster %s, not --fsid %s", path, fsid, cfg.FSID)
	}
	name, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeyName))
	if err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	}
	if string(name) != cfg.Name {
		return "", nil, fmt.Errorf("monitor: store %s belongs to mon.%s, not --name %s", path, name, cfg.Name)
	}
	fv, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeyFormatVersion))
	if err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	}
	if v, perr := kvstore.ParseU64Key(fv); perr != nil || v != kvstore.FormatVersion {
		return "", nil, fmt.Errorf("monitor: store %s has format version %x, this monitor reads %d", path, fv, kvstore.FormatVersion)
	}
	mm, err := services.NewMonmap().Latest(st)
	if err != nil && !errors.Is(err, services.ErrNotFound) {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	}
	b, err := st.Get(kvstore.BucketMeta, []byte(KeyInitialMembers))
	if err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	}
	if b == nil {
		if mm == nil {
			return "", nil, fmt.Errorf("monitor: store %s has neither a monmap nor the founding members", path)
		}
		return fsid, mm, nil
	}
	first := &minimonv1.MonMap{}
	if err := proto.Unmarshal(b, first); err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: founding members: %w", path, err)
	}
	// A joined monitor keeps the map it joined with (membership.go) until it has caught up
	// to that epoch: an older committed map may not even hold it yet.
	if mm == nil || first.GetEpoch() > mm.GetEpoch() {
		return fsid, first, nil
	}
	return fsid, mm, nil
}

// writeIdentity writes a new store's identity in one transaction: fsid, own name, format
// version, and the member map it starts with (meta/initial_members; loadIdentity prefers it to
// an older committed map until the store catches up).
func writeIdentity(st *kvstore.DB, fsid, name string, mm *minimonv1.MonMap) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(mm)
	if err != nil {
		return err
	}
	put := func(k string, v []byte) *minimonv1.StoreOp {
		return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketMeta, Key: []byte(k), Value: v}
	}
	tx := &minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		put(kvstore.KeyFSID, []byte(fsid)),
		put(kvstore.KeyName, []byte(name)),
		put(kvstore.KeyFormatVersion, kvstore.U64Key(kvstore.FormatVersion)),
		put(KeyInitialMembers, b),
	}}
	if err := st.Apply(tx); err != nil {
		return fmt.Errorf("monitor: store %s: write identity: %w", st.Path(), err)
	}
	return nil
}

// firstStart writes the identity of an empty store.
func firstStart(st *kvstore.DB, cfg *Config) (string, *minimonv1.MonMap, error) {
	if sizes, err := st.Sizes(); err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", st.Path(), err)
	} else if len(sizes) > 0 {
		return "", nil, fmt.Errorf("monitor: store %s holds data but no cluster id (meta/fsid): refusing to guess", st.Path())
	}
	if len(cfg.InitialMembers) == 0 {
		return "", nil, fmt.Errorf("monitor: the store in %s is empty: the first start needs --%s (or --%s)",
			cfg.DataDir, FlagInitialMembers, FlagJoin)
	}
	fsid := strings.ToLower(cfg.FSID)
	if fsid == "" {
		fsid = DeriveFSID(cfg.InitialMembers)
	}
	mm := InitialMonmap(fsid, cfg.InitialMembers)
	if rankOf(mm, cfg.Name) < 0 {
		return "", nil, fmt.Errorf("monitor: --%s does not contain --%s %s", FlagInitialMembers, FlagName, cfg.Name)
	}
	if err := writeIdentity(st, fsid, cfg.Name, mm); err != nil {
		return "", nil, err
	}
	return fsid, mm, nil
}

// DeriveFSID names a cluster from its founding members, so every member given the same list
// computes the same id: a UUID (version 5 layout) from SHA-1 of the sorted name=addr list.
func DeriveFSID(members []Member) string {
	parts := make([]string, len(members))
	for i, mb := range members {
		parts[i] = mb.Name + "=" + mb.Addr
	}
	slices.Sort(parts)
	sum := sha1.Sum([]byte("minimon-fsid\x00" + strings.Join(parts, ",")))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// InitialMonmap is the founding member map: ranks in name order, exactly as
// services.Monmap.CreateInitial will commit it as epoch 1. It carries epoch 0 (not committed).
func InitialMonmap(fsid string, members []Member) *minimonv1.MonMap {
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	mm := &minimonv1.MonMap{Fsid: fsid}
	for i, mb := range sorted {
		mm.Mons = append(mm.Mons, &minimonv1.MonInfo{Rank: int32(i), Name: mb.Name, Addr: mb.Addr})
	}
	return mm
}

func rankOf(mm *minimonv1.MonMap, name string) int32 {
	for _, mi := range mm.GetMons() {
		if mi.GetName() == name {
			return mi.GetRank()
		}
	}
	return -1
}

func peersOf(mm *minimonv1.MonMap) map[int32]string {
	p := make(map[int32]string, len(mm.GetMons()))
	for _, mi := range mm.GetMons() {
		p[mi.GetRank()] = mi.GetAddr()
	}
	return p
}

func ranksOf(mm *minimonv1.MonMap) []int32 {
	r := make([]int32, 0, len(mm.GetMons()))
	for _, mi := range mm.GetMons() {
		r = append(r, mi.GetRank())
	}
	return r
}

// sameMembers compares the (rank, name, addr) lists of two maps.
func sameMembers(a, b *minimonv1.MonMap) bool {
	return slices.EqualFunc(a.GetMons(), b.GetMons(), func(x, y *minimonv1.MonInfo) bool {
		return x.GetRank() == y.GetRank() && x.GetName() == y.GetName() && x.GetAddr() == y.GetAddr()
	})
}

// FSID is the cluster id.
func (m *Monitor) FSID() string { return m.fsid }

// Addr is the address the monitor serves on (the listener's, so a ":0" port is resolved).
func (m *Monitor) Addr() string { return m.lis.Addr().String() }

// Ready reports whether the monitor is in a quorum (leader or peon): /readyz.
func (m *Monitor) Ready() bool { return m.ready.Load() }

// Run serves until ctx is done (the caller turns SIGTERM into that), then stops cleanly:
// clients are refused, the transport and the gRPC server stop (bounded), the store closes.
// It returns nil after a clean stop, ErrRemoved when the monmap no longer holds this monitor,
// or the error that stopped it. Run may be called once.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("monitor: Run called twice")
	}
	writer := newStoreWriter(m.store, m.lg, m.postWrites, func(err error) {
		select {
		case m.fatal <- err:
		default:
		}
	})
	m.l.writer = writer
	// The sync requester stops with ctx.
	m.bg, m.bgCancel = context.WithCancel(ctx)
	defer m.bgCancel()

	served := make(chan error, 1)
	go func() { served <- m.srv.Serve(m.lis) }()
	m.lg.Info("monitor ready", zap.String("name", m.cfg.Name), zap.String("addr", m.Addr()),
		zap.String("fsid", m.fsid), zap.Int32("rank", m.l.rank))

	runErr := m.resumeSync()
	if runErr == nil && ctx.Err() == nil {
		runErr = m.startNode(time.Now())
	}
	if runErr == nil && ctx.Err() == nil {
		runErr = m.loop(ctx)
	}
	close(m.loopGone)

	// Stop: refuse new work, then take everything down in dependency order.
	close(m.stopping)
	m.bgCancel()
	m.hs.Shutdown()
	if m.l.node != nil {
		m.l.node.Stop()
	}
	_ = m.tr.Close() // ends the peer streams, so GracefulStop is not held up by them
	stopped := make(chan struct{})
	go func() { m.srv.GracefulStop(); close(stopped) }()
	t := time.NewTimer(shutdownGrace)
	select {
	case <-stopped:
		t.Stop()
	case <-t.C:
		m.lg.Warn("graceful stop timed out; closing remaining client streams")
		m.srv.Stop()
		<-stopped
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) && runErr == nil {
		runErr = fmt.Errorf("monitor: serve: %w", err)
	}
	m.bgWG.Wait() // the sync requester writes the store
	writer.Close()
	m.fwdMu.Lock()
	for addr, cc := range m.fwdConns {
		_ = cc.Close()
		delete(m.fwdConns, addr)
	}
	m.fwdMu.Unlock()
	if err := m.store.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("monitor: close store: %w", err)
	}
	m.ready.Store(false)
	m.lg.Info("monitor stopped", zap.Error(runErr))
	return runErr
}

func (m *Monitor) isStopping() bool {
	select {
	case <-m.stopping:
		return true
	default:
		return false
	}
}

// resumeSync finishes an interrupted full sync (the store's marker is set) before the node is
// built: a half-copied store must never vote or serve (sync.go). It tries every other member
// until one sync succeeds or Run is stopped, then reloads the member map from the synced store.
func (m *Monitor) resumeSync() error {
	if !SyncInProgress(m.store) {
		return nil
	}
	var addrs []string
	for _, mi := range m.l.monmap.GetMons() {
		if mi.GetRank() != m.l.rank {
			addrs = append(addrs, mi.GetAddr())
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("monitor: store %s holds an interrupted sync and there is no other member to sync from", m.store.Path())
	}
	m.lg.Warn("the store holds an interrupted full sync: syncing again before joining")
	m.syncing.Store(true)
	ok := m.runSync(addrs, 0)
	m.syncing.Store(false)
	if !ok {
		if m.bg.Err() != nil {
			return nil // stopped meanwhile; the next start resumes
		}
		return fmt.Errorf("monitor: store %s: the interrupted sync could not be finished", m.store.Path())
	}
	if err := m.l.mm.Refresh(m.store); err != nil {
		return fmt.Errorf("monitor: load the monmap after sync: %w", err)
	}
	cur := m.l.mm.Current()
	if cur == nil {
		return nil // nothing committed yet anywhere: the founding map stays
	}
	if cur.GetEpoch() <= m.l.monmap.GetEpoch() {
		return nil // a joined monitor's map is newer than the synced store's
	}
	rank := rankOf(cur, m.cfg.Name)
	if rank < 0 {
		m.lg.Warn(fmt.Sprintf("removed from the member map at epoch %d; exiting", cur.GetEpoch()))
		return fmt.Errorf("%w: mon.%s is not in monmap epoch %d", ErrRemoved, m.cfg.Name, cur.GetEpoch())
	}
	m.setMembers(cur, rank)
	return nil
}

// postWrites hands store completions to the loop; false once the loop is gone.
func (m *Monitor) postWrites(dones []func()) bool {
	select {
	case m.writeDone <- dones:
		return true
	case <-m.loopGone:
		return false
	}
}

// newIncarnation draws a random odd (hence non-zero) paxos incarnation (rule 1).
func newIncarnation() uint64 { return rand.Uint64() | 1 }

// newRand seeds the elector's jitter (pre-vote retries) per process.
func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }
