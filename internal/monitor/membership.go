package monitor

// Member map changes (ceph-mon-spec.md 7.1, design.md 4a rule 8): `mon add` and `mon remove`
// on the leader, the re-bootstrap of every monitor into a committed map (ranks may shift; the
// node and the transport are rebuilt in place), a removed monitor's exit, a newer map learned
// from a peer while out of quorum, and the first start of a monitor joining with --join.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/node"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// DefaultJoinTimeout bounds a --join start-up: reaching the cluster and having the member map
// change committed.
const DefaultJoinTimeout = 60 * time.Second

// removedLinger is how long a removed monitor keeps its transport and server up after it
// stopped its node: the COMMIT of its own removal and the client's reply still go out.
const removedLinger = 300 * time.Millisecond

// rebuildSettle is the pause between stopping the old node and starting the new one on a
// member map change: the old node's last messages (the COMMIT of the change) leave before
// SetPeers drops the links of departed or shifted ranks with their queues.
const rebuildSettle = 50 * time.Millisecond

// errMemberChangeBusy: a second member map change came while one is in flight on the leader.
const errMemberChangeBusy = "a member map change is in progress; retry"

// errForwardNotLeader: a forwarded write or member map change reached a peon (the leader the forwarding
// peon saw lost the role, typically in the re-election after the previous change committed).
// It answers at once: the forwarding peon re-forwards to the leader it sees now.
const errForwardNotLeader = "not the leader: forward the request to the current leader"

// forwardRetryDelay spaces the re-forwards of a write that reached a former leader, while this
// peon's view of the leader catches up.
const forwardRetryDelay = 20 * time.Millisecond

// WithContext bounds the start-up work of New (the --join handshake) by ctx.
func WithContext(ctx context.Context) Option { return func(o *options) { o.ctx = ctx } }

// WithJoinTimeout replaces DefaultJoinTimeout.
func WithJoinTimeout(d time.Duration) Option { return func(o *options) { o.joinTimeout = d } }

// membership is the event loop's state for member map changes.
type membership struct {
	changing bool // this leader has a member map change in flight (one at a time)
	// adopted is a newer committed map learned from a peer's Probe answer while out of quorum
	// (our store has not caught up to it yet); the node runs with it.
	adopted   *minimonv1.MonMap
	checking  bool      // a Probe round for a newer map runs
	nextCheck time.Time // next Probe round while out of quorum; zero while in quorum
	exitAt    time.Time // removed: Run returns ErrRemoved at this time
	settleAt  time.Time // the old node is stopped; the new one starts at this time
}

// ---- the client commands ----

// memberReply is what MonAddReply and MonRemoveReply share.
type memberReply interface {
	proto.Message
	GetMessage() string
	GetMonmap() *minimonv1.MonMap
}

func (s *clientServer) MonAdd(ctx context.Context, req *minimonv1.MonAddRequest) (*minimonv1.MonAddReply, error) {
	return s.m.monAdd(ctx, req, false)
}

func (s *clientServer) MonRemove(ctx context.Context, req *minimonv1.MonRemoveRequest) (*minimonv1.MonRemoveReply, error) {
	return s.m.monRemove(ctx, req, false)
}

func (m *Monitor) monAdd(ctx context.Context, req *minimonv1.MonAddRequest, forwarded bool) (*minimonv1.MonAddReply, error) {
	reply := &minimonv1.MonAddReply{}
	msg, mm, err := m.changeMembers(ctx, minimonv1.Monitor_MonAdd_FullMethodName, req, reply, forwarded,
		func() (services.Update, error) { return m.l.mm.Add(req.GetName(), req.GetAddr()) })
	if err != nil {
		return nil, err
	}
	return &minimonv1.MonAddReply{Message: msg, Monmap: mm}, nil
}

func (m *Monitor) monRemove(ctx context.Context, req *minimonv1.MonRemoveRequest, forwarded bool) (*minimonv1.MonRemoveReply, error) {
	reply := &minimonv1.MonRemoveReply{}
	msg, mm, err := m.changeMembers(ctx, minimonv1.Monitor_MonRemove_FullMethodName, req, reply, forwarded,
		func() (services.Update, error) { return m.l.mm.Remove(req.GetName()) })
	if err != nil {
		return nil, err
	}
	return &minimonv1.MonRemoveReply{Message: msg, Monmap: mm}, nil
}

// handleForwardMembers runs a member map change a peon forwarded (Peer.Forward).
func (m *Monitor) handleForwardMembers(ctx context.Context, method string, b []byte) (proto.Message, error) {
	switch method {
	case minimonv1.Monitor_MonAdd_FullMethodName:
		req := &minimonv1.MonAddRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "forwarded %s: %v", method, err)
		}
		return m.monAdd(ctx, req, true)
	case minimonv1.Monitor_MonRemove_FullMethodName:
		req := &minimonv1.MonRemoveRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "forwarded %s: %v", method, err)
		}
		return m.monRemove(ctx, req, true)
	}
	return nil, status.Errorf(codes.Unimplemented, "forwarding %s: not a member map change", method)
}

// changeMembers is the write path of a member map change (like write, for the monmap
// service): the leader validates with build, proposes, and replies with the resulting map once
// it commits; a peon forwards to the leader. One change at a time: the Monmap service stages
// on one pending map and the commit ends the epoch anyway (rule 8), so a second change waits
// for the first to commit (and the quorum to re-form), or gives up with Unavailable.
func (m *Monitor) changeMembers(ctx context.Context, method string, req proto.Message, reply memberReply,
	forwarded bool, build func() (services.Update, error)) (string, *minimonv1.MonMap, error) {
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	var (
		msg     string
		mm      *minimonv1.MonMap
		rerr    error
		forward string
		done    chan paxos.Result
		busy    bool
		pause   bool // the last forward reached a peon: look again at the next tick or change
	)
retry:
	err := m.await(wctx, func(now time.Time) bool {
		busy = false
		if pause {
			pause = false
			return false
		}
		st := m.l.node.Status()
		switch {
		case st.Role == node.Leader:
			if m.l.mm.Current() == nil || !m.l.mem.exitAt.IsZero() {
				return false // the founding map is not committed yet, or we are leaving
			}
			if m.l.mem.changing {
				busy = true
				return false
			}
			upd, err := build()
			if (err != nil || len(upd.Ops) == 0) && !m.l.node.Readable(now) {
				// A verdict from state alone (refused, or nothing to change) is a read: give
				// it only under a valid lease with nothing in flight (rule 4), never from a
				// deposed leader's or an uncommitted value's state.
				return false
			}
			if err != nil {
				rerr = toStatus(err)
				return true
			}
			if len(upd.Ops) == 0 {
				msg, mm = upd.Message, m.l.mm.Current()
				return true
			}
			val, err := services.Encode(services.Merge(upd.Ops))
			if err != nil {
				m.l.mm.Discard()
				rerr = status.Error(codes.Internal, err.Error())
				return true
			}
			ch := make(chan paxos.Result, 1)
			err = m.l.node.Propose(now, val, func(r paxos.Result) {
				m.l.mem.changing = false
				if r.Err != nil {
					m.l.mm.Discard()
				}
				ch <- r
			})
			if err != nil {
				m.l.mm.Discard()
				if errors.Is(err, paxos.ErrNotWriteable) || errors.Is(err, paxos.ErrNotLeader) {
					return false
				}
				rerr = status.Error(codes.Internal, err.Error())
				return true
			}
			m.l.mem.changing = true
			m.lg.Info("member map change proposed", zap.String("change", upd.Message))
			msg, mm, done = upd.Message, monmapIn(val), ch
			return true
		case st.Role == node.Peon && !forwarded:
			for _, mi := range m.l.monmap.GetMons() {
				if mi.GetRank() == st.Leader {
					forward = mi.GetAddr()
					return true
				}
			}
		case st.Role == node.Peon:
			// Forwarded to us as the leader, but another monitor leads now: waiting here
			// cannot end before maxWait (a peon never takes the change), so answer at once.
			rerr = status.Error(codes.Unavailable, errForwardNotLeader)
			return true
		}
		return false
	})
	if err != nil {
		if busy && !errors.Is(err, errStopping) && !errors.Is(ctx.Err(), context.Canceled) {
			return "", nil, status.Error(codes.Unavailable, errMemberChangeBusy)
		}
		return "", nil, waitErr(ctx, err, "no quorum: no leader to take the member map change")
	}
	switch {
	case rerr != nil:
		return "", nil, rerr
	case forward != "":
		err := m.forward(ctx, forward, method, req, reply)
		if st, _ := status.FromError(err); st.Code() == codes.Unavailable && st.Message() == errForwardNotLeader &&
			wctx.Err() == nil {
			// Nothing was proposed there: forward again once we see the new leader.
			m.lg.Debug("member map change reached a peon; forwarding again", zap.String("to", forward))
			forward, pause = "", true
			goto retry
		}
		if err != nil {
			return "", nil, err
		}
		return reply.GetMessage(), reply.GetMonmap(), nil
	case done == nil:
		return msg, mm, nil
	}
	result := func(r paxos.Result) (string, *minimonv1.MonMap, error) {
		if r.Err != nil {
			return "", nil, status.Errorf(codes.Unavailable, "outcome unknown: %v", r.Err)
		}
		return msg, mm, nil
	}
	select {
	case r := <-done:
		return result(r)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return "", nil, status.Error(codes.Canceled, "request canceled; outcome unknown")
		}
		return "", nil, status.Error(codes.DeadlineExceeded, "deadline exceeded; outcome unknown")
	case <-m.stopping:
		// Removing the leader itself stops it right after the commit: the reply may be there.
		select {
		case r := <-done:
			return result(r)
		default:
			return "", nil, status.Error(codes.Unavailable, "monitor is shutting down; outcome unknown")
		}
	}
}

// ---- re-bootstrap into a committed map ----

// memberMap is the newest map this monitor knows: the one it runs with, or a committed one it
// has not rebuilt into yet.
func (m *Monitor) memberMap() *minimonv1.MonMap {
	if cur := m.l.mm.Current(); cur != nil && cur.GetEpoch() >= m.l.monmap.GetEpoch() {
		return cur
	}
	return proto.Clone(m.l.monmap).(*minimonv1.MonMap)
}

// newestMap is the map to rebuild into: the latest committed one or an adopted newer one.
func (m *Monitor) newestMap() *minimonv1.MonMap {
	cur := m.l.mm.Current()
	if a := m.l.mem.adopted; a != nil && a.GetEpoch() > cur.GetEpoch() {
		return proto.Clone(a).(*minimonv1.MonMap)
	}
	return cur
}

// setMembers switches the transport and the loop to mm, where this monitor has rank: peers
// identify senders by rank and the transport stamps ours, so a shifted rank is set before the
// peer links are rebuilt (SetPeers skips our own rank).
func (m *Monitor) setMembers(mm *minimonv1.MonMap, rank int32) {
	if rank != m.l.rank {
		m.lg.Info("rank changed", zap.Int32("from", m.l.rank), zap.Int32("to", rank),
			zap.Uint64("monmap_epoch", mm.GetEpoch()))
		m.tr.setRank(rank)
		m.l.rank = rank
	}
	m.l.monmap = mm
	m.tr.SetPeers(peersOf(mm))
}

// rebuildNode restarts the protocol with the new member map once no write of the old node is
// in flight (a new node reading the store before an old promise is durable could regress it):
// every monitor, leader included, re-bootstraps (probes, elects) with the new members, ranks
// and monmap epoch, so the quorum math uses the new member count at once.
func (m *Monitor) rebuildNode(now time.Time) {
	m.l.rebuild = false
	if !m.l.mem.exitAt.IsZero() {
		return
	}
	mm := m.newestMap()
	if mm == nil || mm.GetEpoch() <= m.l.monmap.GetEpoch() {
		return
	}
	rank := rankOf(mm, m.cfg.Name)
	if rank < 0 {
		m.leaveRemoved(now, mm.GetEpoch())
		return
	}
	if m.l.mem.settleAt.IsZero() {
		m.lg.Info("member map changed: rebuilding", zap.Uint64("monmap_epoch", mm.GetEpoch()),
			zap.Int("mons", len(mm.GetMons())), zap.Int32("rank", rank))
		m.l.node.Stop()
		m.l.mem.settleAt = now.Add(rebuildSettle)
	}
	if now.Before(m.l.mem.settleAt) {
		m.l.rebuild = true // the loop calls again at the next event or tick
		return
	}
	m.l.mem.settleAt = time.Time{}
	m.setMembers(mm, rank)
	if err := m.startNode(now); err != nil {
		m.l.exitErr = err
	}
	m.wake()
}

// leaveRemoved stops the node of a monitor that is not in the committed map; Run returns
// ErrRemoved shortly after (removedLinger), so what is queued for peers and clients goes out.
func (m *Monitor) leaveRemoved(now time.Time, epoch uint64) {
	m.lg.Warn(fmt.Sprintf("removed from the member map at epoch %d; exiting", epoch))
	m.l.node.Stop()
	m.ready.Store(false)
	m.l.mem.exitAt = now.Add(removedLinger)
	m.wake()
}

// fromMember: the envelope's rank is a member of the map the node runs with and carries that
// member's name. Envelopes queued before a rank shift claim their sender's old rank: the name
// tells them apart.
func (m *Monitor) fromMember(env *minimonv1.PeerEnvelope) bool {
	for _, mi := range m.l.monmap.GetMons() {
		if mi.GetRank() == env.GetFromRank() {
			return mi.GetName() == env.GetFromName()
		}
	}
	return false
}

// membershipTick (every tick, on the loop): a removed monitor's exit, and, while out of quorum,
// a periodic Probe of the other members for a newer committed map. A monitor that missed a
// member map change (down, or its COMMIT lost) would otherwise never catch up: members of the
// new map ignore its elections (rule 8) and, once removed, its envelopes altogether.
func (m *Monitor) membershipTick(now time.Time) {
	if !m.l.mem.exitAt.IsZero() {
		if !now.Before(m.l.mem.exitAt) {
			m.l.exitErr = ErrRemoved
		}
		return
	}
	if m.l.node.Role().InQuorum() {
		m.l.mem.nextCheck = time.Time{}
		return
	}
	interval := 4 * m.cfg.MonProbeTimeout
	if m.l.mem.nextCheck.IsZero() {
		m.l.mem.nextCheck = now.Add(interval)
		return
	}
	if m.l.mem.checking || now.Before(m.l.mem.nextCheck) {
		return
	}
	m.l.mem.nextCheck = now.Add(interval)
	var addrs []string
	for _, mi := range m.l.monmap.GetMons() {
		if mi.GetRank() != m.l.rank {
			addrs = append(addrs, mi.GetAddr())
		}
	}
	if len(addrs) == 0 {
		return
	}
	ours, rank := m.memberMap().GetEpoch(), m.l.rank
	m.l.mem.checking = true
	m.bgWG.Add(1)
	go func() {
		defer m.bgWG.Done()
		newer := m.probeForNewerMap(addrs, rank, ours, interval)
		select {
		case m.events <- func() {
			m.l.mem.checking = false
			if newer != nil {
				m.adoptMonmap(time.Now(), newer)
			}
		}:
		case <-m.loopGone:
		}
	}()
}

// probeForNewerMap asks each address (Peer.Probe) for its map and returns the newest one above
// epoch ours held by a monitor in a quorum (so committed), or nil.
func (m *Monitor) probeForNewerMap(addrs []string, rank int32, ours uint64, timeout time.Duration) *minimonv1.MonMap {
	var best *minimonv1.MonMap
	for _, addr := range addrs {
		cc, err := m.peerConn(addr)
		if err != nil {
			return best
		}
		ctx, cancel := context.WithTimeout(m.bg, timeout)
		r, err := minimonv1.NewPeerClient(cc).Probe(ctx, &minimonv1.ProbeMessage{
			Op: minimonv1.ProbeMessage_PROBE, Name: m.cfg.Name, Rank: rank, Fsid: m.fsid})
		cancel()
		if err != nil || !r.GetHasLeader() {
			continue
		}
		mm := r.GetMonmap()
		if mm.GetFsid() == m.fsid && mm.GetEpoch() > max(ours, best.GetEpoch()) {
			best = mm
		}
	}
	return best
}

// adoptMonmap takes a newer committed map learned from a peer (spec 2.4 step 1): the node is
// rebuilt with it (paxos recovery or a sync then brings the store up to it), or, without us in
// it, the monitor leaves.
func (m *Monitor) adoptMonmap(now time.Time, mm *minimonv1.MonMap) {
	if !m.l.mem.exitAt.IsZero() || mm.GetEpoch() <= m.memberMap().GetEpoch() {
		return
	}
	m.lg.Info("learned a newer member map from a peer", zap.Uint64("monmap_epoch", mm.GetEpoch()),
		zap.Uint64("ours", m.l.monmap.GetEpoch()))
	m.l.mem.adopted = mm
	if rankOf(mm, m.cfg.Name) < 0 {
		m.leaveRemoved(now, mm.GetEpoch())
		return
	}
	m.l.rebuild = true
}

// setRank changes the rank stamped on outgoing envelopes (a member map change shifted it).
func (t *Transport) setRank(rank int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rank = rank
}

// ---- --join ----

// joinStart is New's identity step for --join: on an empty store only, learn the fsid and the
// member map from the given monitors (Peer.Probe, empty fsid allowed), have the cluster add
// this monitor (MonAdd through the client library, idempotent) unless the map already holds
// it with this address, then write the store's identity with the resulting map. The monitor
// then starts far behind: probing makes it sync, and admission brings it into the quorum.
func joinStart(o options, st *kvstore.DB, cfg *Config, lg *zap.Logger) (string, *minimonv1.MonMap, error) {
	path := st.Path()
	if fsid, err := st.Get(kvstore.BucketMeta, []byte(kvstore.KeyFSID)); err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	} else if fsid != nil {
		return "", nil, fmt.Errorf("monitor: store %s is already initialized (cluster %s); --%s is for the first start only: start without it",
			path, fsid, FlagJoin)
	}
	if sizes, err := st.Sizes(); err != nil {
		return "", nil, fmt.Errorf("monitor: store %s: %w", path, err)
	} else if len(sizes) > 0 {
		return "", nil, fmt.Errorf("monitor: store %s holds data but no cluster id (meta/fsid): refusing to guess", path)
	}
	ctx := o.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	timeout := o.joinTimeout
	if timeout <= 0 {
		timeout = DefaultJoinTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lg = lg.Named("join")

	fsid, mm, err := probeJoin(ctx, cfg, lg)
	if err != nil {
		return "", nil, fmt.Errorf("monitor: --%s: no monitor of %v answered within %v: %w", FlagJoin, cfg.Join, timeout, err)
	}
	lg.Info("reached the cluster", zap.String("fsid", fsid), zap.Uint64("monmap_epoch", mm.GetEpoch()),
		zap.Int("mons", len(mm.GetMons())))
	if !holds(mm, cfg.Name, cfg.Addr) {
		if mm, err = addSelf(ctx, cfg, mm, lg); err != nil {
			return "", nil, err
		}
		if mm.GetFsid() != "" && mm.GetFsid() != fsid {
			return "", nil, fmt.Errorf("monitor: --%s: the cluster answered with fsid %s, then %s", FlagJoin, fsid, mm.GetFsid())
		}
	}
	if err := writeIdentity(st, fsid, cfg.Name, mm); err != nil {
		return "", nil, err
	}
	lg.Info("joined the member map; starting as a member", zap.Uint64("monmap_epoch", mm.GetEpoch()),
		zap.Int32("rank", rankOf(mm, cfg.Name)))
	return fsid, mm, nil
}

// holds reports whether mm has mon.name at addr.
func holds(mm *minimonv1.MonMap, name, addr string) bool {
	return slices.ContainsFunc(mm.GetMons(), func(mi *minimonv1.MonInfo) bool {
		return mi.GetName() == name && mi.GetAddr() == addr
	})
}

// probeJoin probes the --join addresses in turn until one answers with a committed map
// (epoch >= 1) of the expected cluster (--fsid, when given).
func probeJoin(ctx context.Context, cfg *Config, lg *zap.Logger) (string, *minimonv1.MonMap, error) {
	conns := make([]*grpc.ClientConn, len(cfg.Join))
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				_ = cc.Close()
			}
		}
	}()
	var last error
	for {
		for i, addr := range cfg.Join {
			if conns[i] == nil {
				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					return "", nil, fmt.Errorf("address %s: %w", addr, err)
				}
				conns[i] = cc
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			r, err := minimonv1.NewPeerClient(conns[i]).Probe(pctx, &minimonv1.ProbeMessage{
				Op: minimonv1.ProbeMessage_PROBE, Name: cfg.Name, Rank: -1, Fsid: cfg.FSID})
			cancel()
			switch {
			case status.Code(err) == codes.PermissionDenied:
				return "", nil, fmt.Errorf("%s: %v", addr, status.Convert(err).Message())
			case err != nil:
				last = fmt.Errorf("%s: %w", addr, err)
			case r.GetMonmap().GetEpoch() == 0 || r.GetFsid() == "":
				last = fmt.Errorf("%s: the cluster has no committed member map yet", addr)
			default:
				return r.GetFsid(), r.GetMonmap(), nil
			}
			lg.Debug("probe failed", zap.Error(last))
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return "", nil, last
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// addSelf has the cluster add this monitor (`mon add`, idempotent; the client hunts and retries
// until the change commits or ctx ends) and returns the resulting map.
func addSelf(ctx context.Context, cfg *Config, mm *minimonv1.MonMap, lg *zap.Logger) (*minimonv1.MonMap, error) {
	eps := slices.Clone(cfg.Join)
	for _, mi := range mm.GetMons() {
		if !slices.Contains(eps, mi.GetAddr()) {
			eps = append(eps, mi.GetAddr())
		}
	}
	c, err := client.New(client.Config{Endpoints: eps, Logger: lg})
	if err != nil {
		return nil, fmt.Errorf("monitor: --%s: %w", FlagJoin, err)
	}
	defer func() { _ = c.Close() }()
	lg.Info("asking the cluster to add this monitor", zap.String("name", cfg.Name), zap.String("addr", cfg.Addr))
	r, err := c.MonAdd(ctx, cfg.Name, cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("monitor: --%s: mon add %s %s: %w", FlagJoin, cfg.Name, cfg.Addr, err)
	}
	lg.Info("mon add", zap.String("reply", r.GetMessage()), zap.Uint64("monmap_epoch", r.GetMonmap().GetEpoch()))
	if !holds(r.GetMonmap(), cfg.Name, cfg.Addr) {
		return nil, fmt.Errorf("monitor: --%s: mon add %s %s answered %q with a map without it", FlagJoin, cfg.Name, cfg.Addr, r.GetMessage())
	}
	return r.GetMonmap(), nil
}
