package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/node"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// loopState is everything the event loop owns. Nothing else reads or writes it.
type loopState struct {
	node   *node.Node
	writer *storeWriter
	rank   int32
	// monmap is the member map the node runs with: the latest committed one, or the founding
	// map (epoch 0) until epoch 1 commits.
	monmap *minimonv1.MonMap
	mm     *services.Monmap
	kv     *services.KV
	cfg    *services.Config
	dedup  *dedupTable  // write deduplication (dedup.go); created on first use
	health *healthState // health checks' numbers (health.go); created on first use

	inflight       int  // Persist calls whose completion the loop has not run yet
	rebuild        bool // a committed monmap changed the members: rebuild the node once idle
	creatingMonmap bool // the leader's CreateInitial value is in flight
	exitErr        error
	mem            membership // member map changes (membership.go)

	// changed wakes requests waiting for a quorum, a lease or a leader: closed (and replaced)
	// on every tick and state change while someone holds it.
	changed     chan struct{}
	changedUsed bool

	lastBeginPN, lastBeginLC uint64

	watch watchHub // attached watches (watch.go)
}

// loop is the event loop: the only goroutine that touches the node and the services.
func (m *Monitor) loop(ctx context.Context) error {
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	inbox := m.tr.Inbox()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-m.fatal:
			m.lg.Error("store write failed; stopping", zap.Error(err))
			return err
		case env := <-inbox:
			if m.fromMember(env) {
				m.l.node.Step(time.Now(), env)
			}
		case dones := <-m.writeDone:
			for _, d := range dones {
				d()
			}
		case fn := <-m.events:
			fn()
		case <-tick.C:
			m.tick(time.Now())
		}
		if m.l.exitErr != nil {
			return m.l.exitErr
		}
		if m.l.rebuild && m.l.inflight == 0 {
			m.rebuildNode(time.Now())
			if m.l.exitErr != nil {
				return m.l.exitErr
			}
		}
	}
}

func (m *Monitor) tick(now time.Time) {
	m.l.node.Tick(now)
	m.maybeCreateMonmap(now)
	m.healthTick(now)
	m.watchTick()
	m.membershipTick(now)
	st := m.l.node.Status()
	m.met.electionEpoch.Set(float64(st.ElectionEpoch))
	m.wake()
}

// wake releases every request waiting for a state change.
func (m *Monitor) wake() {
	if m.l.changedUsed {
		close(m.l.changed)
		m.l.changed = make(chan struct{})
		m.l.changedUsed = false
	}
}

// changedChan is closed at the next tick or state change.
func (m *Monitor) changedChan() <-chan struct{} {
	if m.l.changed == nil {
		m.l.changed = make(chan struct{})
	}
	m.l.changedUsed = true
	return m.l.changed
}

// nodeConfig builds the node's configuration for the member map in force.
func (m *Monitor) nodeConfig() node.Config {
	ranks := ranksOf(m.l.monmap)
	// Epoch 1 also for the founding map: it is the map CreateInitial commits as epoch 1, so
	// election acks keep counting across that commit (rule 8).
	mmEpoch := max(m.l.monmap.GetEpoch(), 1)
	pc := m.cfg.PaxosConfig(m.l.rank, ranks)
	pc.Incarnation = newIncarnation()
	pc.EndsEpoch = m.endsEpoch
	ec := m.cfg.ElectionConfig(m.l.rank, ranks, mmEpoch)
	ec.Rand = newRand()
	return node.Config{
		Rank: m.l.rank, Members: ranks, MonmapEpoch: mmEpoch,
		Paxos: pc, Election: ec,
		ProbeTimeout:   m.cfg.MonProbeTimeout,
		NewIncarnation: newIncarnation,
		Logger:         zapKV{m.lg.Named("node").Sugar()},
	}
}

// endsEpoch is paxos Config.EndsEpoch (rule 8): a committed monmap change ends the epoch,
// except a map no newer than the one we run with: the founding map committed as epoch 1, or
// history a joined or catching-up monitor replays up to the map it already runs with.
func (m *Monitor) endsEpoch(value []byte) bool {
	if !services.IsMonmapChange(value) {
		return false
	}
	mm := monmapIn(value)
	if mm == nil {
		return true
	}
	return mm.GetEpoch() > max(m.l.monmap.GetEpoch(), 1)
}

// monmapIn returns the map a monmap-changing value writes (nil if it cannot tell).
func monmapIn(value []byte) *minimonv1.MonMap {
	tx, err := services.Decode(value)
	if err != nil {
		return nil
	}
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

// startNode builds the node for the member map in force and starts it probing.
func (m *Monitor) startNode(now time.Time) error {
	n, err := node.New(m.nodeConfig(), m.store, (*nodeEnv)(m), now)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	n.OnCommit(m.onCommit)
	n.OnRoleChange(m.onRoleChange)
	m.l.node = n
	n.Start(now)
	return nil
}

// onCommit runs after committed values are durable: services refresh (update_from_paxos).
func (m *Monitor) onCommit(entries []paxos.Entry) {
	m.met.commits.Add(float64(len(entries)))
	if err := m.l.mm.Refresh(m.store); err != nil {
		m.lg.Error("monmap refresh failed", zap.Error(err))
	}
	if err := m.l.kv.Refresh(m.store); err != nil {
		m.lg.Error("kv refresh failed", zap.Error(err))
	}
	if err := m.l.cfg.Refresh(m.store); err != nil {
		m.lg.Error("config refresh failed", zap.Error(err))
	}
	m.watchCommit(entries)
	m.dedupTab().committed(entries)
	if cur := m.l.mm.Current(); cur != nil && cur.GetEpoch() > m.l.monmap.GetEpoch() {
		if cur.GetEpoch() <= 1 && sameMembers(cur, m.l.monmap) {
			m.l.monmap = cur // the founding map, now committed: nothing to rebuild
		} else {
			m.l.rebuild = true
		}
	}
	m.wake()
}

func (m *Monitor) onRoleChange(old, new node.Role, why string) {
	st := m.l.node.Status()
	m.lg.Info("role change", zap.Stringer("from", old), zap.Stringer("to", new), zap.String("why", why),
		zap.Uint64("epoch", st.Epoch), zap.Int32("leader", st.Leader), zap.Int32s("quorum", st.Quorum),
		zap.Uint64("first_committed", st.FirstCommitted), zap.Uint64("last_committed", st.LastCommitted))
	in := new.InQuorum()
	if in != m.ready.Load() {
		m.ready.Store(in)
		hs := healthpb.HealthCheckResponse_NOT_SERVING
		if in {
			hs = healthpb.HealthCheckResponse_SERVING
		}
		m.hs.SetServingStatus("", hs)
		m.hs.SetServingStatus(minimonv1.Monitor_ServiceDesc.ServiceName, hs)
		m.lg.Info("health", zap.Stringer("status", hs), zap.String("why", why))
	}
	if !in {
		m.endAllWatches(errWatchUnavailable) // watches follow a readable monitor only
	}
	if in {
		m.met.elections.Inc()
		m.met.quorumSize.Set(float64(len(st.Quorum)))
	} else {
		m.met.quorumSize.Set(0)
	}
	if new == node.Leader {
		m.met.isLeader.Set(1)
	} else {
		m.met.isLeader.Set(0)
	}
	if old == node.Leader || new == node.Leader {
		// A new leader starts with nothing staged (create_pending): its earlier staged
		// changes either failed or commit through recovery and arrive by refresh.
		m.l.cfg.Discard()
	}
	if old == node.Leader {
		m.l.mm.Discard()
		m.l.kv.Discard()
		m.dedupTab().discard()
	}
	m.met.electionEpoch.Set(float64(st.ElectionEpoch))
	m.wake()
}

// maybeCreateMonmap: the first leader of a new cluster proposes the founding map as epoch 1
// (Ceph's create_initial, spec 6.3: the first value of a new cluster codifies the monmap).
func (m *Monitor) maybeCreateMonmap(now time.Time) {
	// Only with the founding map: a joined monitor runs with a committed map (epoch >= 1) and
	// must never propose one of its own.
	if m.l.creatingMonmap || m.l.mm.Current() != nil || m.l.monmap.GetEpoch() != 0 || m.l.node.Role() != node.Leader {
		return
	}
	members := make([]services.Member, 0, len(m.l.monmap.GetMons()))
	for _, mi := range m.l.monmap.GetMons() {
		members = append(members, services.Member{Name: mi.GetName(), Addr: mi.GetAddr()})
	}
	m.l.mm.Discard()
	upd, err := m.l.mm.CreateInitial(m.fsid, members)
	if err != nil {
		m.lg.Error("cannot build the initial monmap", zap.Error(err))
		return
	}
	val, err := services.Encode(services.Merge(upd.Ops))
	if err != nil {
		m.lg.Error("cannot encode the initial monmap", zap.Error(err))
		return
	}
	err = m.l.node.Propose(now, val, func(r paxos.Result) {
		m.l.creatingMonmap = false
		if r.Err != nil {
			m.l.mm.Discard()
			m.lg.Info("initial monmap not committed; will retry", zap.Error(r.Err))
			return
		}
		m.lg.Info("initial monmap committed", zap.Uint64("version", r.Version))
	})
	if err != nil {
		m.l.mm.Discard() // not writeable yet (recovery, rule 6 wait): the next tick retries
		return
	}
	m.l.creatingMonmap = true
}

// nodeEnv is the node.Env of a Monitor (its methods run on the loop).
type nodeEnv Monitor

func (e *nodeEnv) Persist(tx *minimonv1.Transaction, done func()) {
	m := (*Monitor)(e)
	m.l.inflight++
	issued := time.Now()
	err := m.l.writer.Persist(tx, func() {
		m.l.inflight--
		m.healthSt().observeWrite(time.Since(issued))
		done()
	})
	if err != nil {
		// The writer only refuses after a failed write or at shutdown; the loop is stopping.
		m.l.inflight--
		if !errors.Is(err, errWriterClosed) {
			m.lg.Error("persist refused", zap.Error(err))
		}
	}
}

func (e *nodeEnv) Send(to int32, env *minimonv1.PeerEnvelope) {
	m := (*Monitor)(e)
	if pm := env.GetPaxos(); pm != nil && pm.GetOp() == minimonv1.PaxosMessage_BEGIN {
		// One round sends BEGIN to every peon: count the round once.
		if pm.GetPn() != m.l.lastBeginPN || pm.GetLastCommitted() != m.l.lastBeginLC {
			m.l.lastBeginPN, m.l.lastBeginLC = pm.GetPn(), pm.GetLastCommitted()
			m.met.begins.Inc()
		}
	}
	m.tr.Send(to, env)
}

// Sync runs a full sync of our store (sync.go) on its own goroutine; the node is
// synchronizing meanwhile (it issues no writes: maybeSync waits for none in flight, so the
// writer is idle) and the outcome is posted back to the loop.
func (e *nodeEnv) Sync(from int32) {
	m := (*Monitor)(e)
	// Providers to try, the one the node chose first, then the other members.
	var addrs []string
	for _, mi := range m.l.monmap.GetMons() {
		if mi.GetRank() == from {
			addrs = append([]string{mi.GetAddr()}, addrs...)
		} else if mi.GetRank() != m.l.rank {
			addrs = append(addrs, mi.GetAddr())
		}
	}
	floor := m.l.node.Status().LastCommitted
	m.syncing.Store(true)
	m.bgWG.Add(1)
	go func() {
		defer m.bgWG.Done()
		ok := m.runSync(addrs, floor)
		m.syncing.Store(false)
		select {
		case m.events <- func() { m.syncFinished(ok) }:
		case <-m.loopGone:
		}
	}()
}

// runSync tries the providers in turn until one sync succeeds. Once a sync has touched the
// store (its marker is set) the monitor must not go on without a finished one, so it keeps
// trying until it stops; before that, a failure returns false (the node probes again).
func (m *Monitor) runSync(addrs []string, floor uint64) bool {
	lg := m.lg.Named("sync")
	for attempt := 0; ; attempt++ {
		addr := addrs[attempt%len(addrs)]
		cc, err := m.peerConn(addr)
		if err == nil {
			r := &SyncRequester{FSID: m.fsid, Name: m.cfg.Name, Floor: floor,
				MaxBytes: uint32(m.cfg.MonSyncMaxPayloadSize), MaxKeys: uint32(m.cfg.MonSyncMaxPayloadKeys), Logger: lg}
			var res SyncResult
			res, err = r.Run(m.bg, minimonv1.NewPeerClient(cc), m.store)
			if err == nil {
				lg.Info("full sync done", zap.String("provider", addr), zap.Uint64("first_committed", res.FirstCommitted),
					zap.Uint64("last_committed", res.LastCommitted), zap.Int("chunks", res.Chunks))
				return true
			}
		}
		if m.bg.Err() != nil {
			return false
		}
		if !SyncInProgress(m.store) {
			lg.Warn("full sync failed; probing again", zap.String("provider", addr), zap.Error(err))
			return false
		}
		lg.Warn("full sync failed with the store half copied; trying again", zap.String("provider", addr), zap.Error(err))
		t := time.NewTimer(m.cfg.MonProbeTimeout)
		select {
		case <-m.bg.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// syncFinished (on the loop) rebuilds the node from the synced store, or returns it to probing.
func (m *Monitor) syncFinished(ok bool) {
	now := time.Now()
	if !ok {
		if SyncInProgress(m.store) {
			return // stopping with a half-copied store: the next start refuses it
		}
		m.l.node.SyncFailed(now)
		return
	}
	if err := m.l.node.SyncDone(now); err != nil {
		m.lg.Error("rebuild after sync failed", zap.Error(err))
		m.l.exitErr = err
		return
	}
	m.onCommit(nil) // services reload from the new store; a newer monmap rebuilds the node
}

// zapKV adapts a zap SugaredLogger to the key/value Logger of paxos, election and node.
type zapKV struct{ s *zap.SugaredLogger }

func (l zapKV) Debug(msg string, kv ...any) { l.s.Debugw(msg, kv...) }
func (l zapKV) Info(msg string, kv ...any)  { l.s.Infow(msg, kv...) }
func (l zapKV) Warn(msg string, kv ...any)  { l.s.Warnw(msg, kv...) }
