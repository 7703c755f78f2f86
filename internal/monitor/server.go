package monitor

import (
	"context"
	"errors"
	"path"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/node"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// maxWait caps how long a request waits for a quorum, a leader or a readable lease when the
// client's deadline is longer (or absent), so a monitor out of quorum answers Unavailable and
// the client hunts for another.
const maxWait = 5 * time.Second

// maxConcurrentStreams bounds streams per client connection.
const maxConcurrentStreams = 1024

// newGRPCServer is the one function that builds the monitor's gRPC server: peers and clients
// on one address (Ceph's way), recovery then metrics interceptors, explicit message and
// keepalive limits, the standard health service (NOT_SERVING out of quorum) and reflection.
func (m *Monitor) newGRPCServer() (*grpc.Server, *health.Server) {
	s := grpc.NewServer(
		grpc.MaxRecvMsgSize(MaxPeerMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(m.recoverUnary, m.metricsUnary),
		grpc.ChainStreamInterceptor(m.recoverStream),
		grpc.ForceServerCodecV2(exactCodec{}), // codec.go: no 1 MiB buffer per 64 KiB reply
	)
	minimonv1.RegisterPeerServer(s, m.newPeerService())
	minimonv1.RegisterMonitorServer(s, &clientServer{m: m})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(minimonv1.Monitor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs
}

// recoverUnary turns a handler panic into codes.Internal: one bad request must not kill the
// monitor.
func (m *Monitor) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			m.lg.Error("handler panic", zap.String("method", info.FullMethod), zap.Any("panic", r),
				zap.ByteString("stack", debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
		}
	}()
	return h(ctx, req)
}

func (m *Monitor) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			m.lg.Error("handler panic", zap.String("method", info.FullMethod), zap.Any("panic", r),
				zap.ByteString("stack", debug.Stack()))
			err = status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
		}
	}()
	return h(srv, ss)
}

// metricsUnary counts client requests by method and result code.
func (m *Monitor) metricsUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if path.Dir(info.FullMethod) == "/"+minimonv1.Monitor_ServiceDesc.ServiceName {
		m.met.clientOps.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Inc()
	}
	return resp, err
}

// ---- posting work to the loop ----

// onLoop runs fn on the event loop (with now read there) and waits for it.
func (m *Monitor) onLoop(ctx context.Context, fn func(now time.Time)) error {
	done := make(chan struct{})
	ev := func() {
		fn(time.Now())
		close(done)
	}
	select {
	case m.events <- ev:
	case <-ctx.Done():
		return ctx.Err()
	case <-m.stopping:
		return errStopping
	}
	// Once the loop has fn, wait for it whatever ctx does: fn writes the caller's variables,
	// and returning early would race with it (and hide what it did, e.g. a proposal). fn never
	// blocks, so this wait is short; loopGone covers a loop that exits first.
	select {
	case <-done:
		return nil
	case <-m.loopGone:
		return errStopping
	}
}

// await runs try on the loop until it reports done, retrying at every tick or state change,
// bounded by ctx.
func (m *Monitor) await(ctx context.Context, try func(now time.Time) bool) error {
	for {
		var done bool
		var wake <-chan struct{}
		if err := m.onLoop(ctx, func(now time.Time) {
			if done = try(now); !done {
				wake = m.changedChan()
			}
		}); err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.stopping:
			return errStopping
		}
	}
}

// waitCtx bounds a wait by the client's deadline and maxWait.
func waitCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, maxWait)
}

// waitErr maps a failed wait to a gRPC status: the client gave up (Canceled), or no quorum
// (or leader, or lease) came within the bound (Unavailable: the client may hunt elsewhere).
func waitErr(parent context.Context, err error, what string) error {
	switch {
	case errors.Is(err, errStopping):
		return status.Error(codes.Unavailable, "monitor is shutting down")
	case errors.Is(parent.Err(), context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return status.Error(codes.Unavailable, what)
	}
	return status.Error(codes.Internal, err.Error())
}

// readLocal waits until this monitor may serve a read (rule 4: leader or peon with a valid
// lease and nothing accepted above lc), then runs read on the loop.
func (m *Monitor) readLocal(ctx context.Context, read func(now time.Time) error) error {
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	var rerr error
	err := m.await(wctx, func(now time.Time) bool {
		if !m.l.node.Readable(now) {
			return false
		}
		rerr = read(now)
		return true
	})
	if err != nil {
		return waitErr(ctx, err, "no quorum: this monitor cannot serve reads now")
	}
	return toStatus(rerr)
}

// inQuorum waits until this monitor is leader or peon, then runs fn on the loop.
func (m *Monitor) inQuorum(ctx context.Context, fn func(now time.Time, st node.Status)) error {
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	err := m.await(wctx, func(now time.Time) bool {
		st := m.l.node.Status()
		if !st.Role.InQuorum() {
			return false
		}
		fn(now, st)
		return true
	})
	if err != nil {
		return waitErr(ctx, err, "no quorum")
	}
	return nil
}

// toStatus maps a service or store error to a gRPC status (services.GRPCCode; one table).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(services.GRPCCode(err), err.Error())
}

// writeResult is a write's outcome as decided on the loop.
type writeResult struct {
	reply   *minimonv1.KVWriteReply
	err     error
	forward string            // peon: the leader's address to forward to
	done    chan paxos.Result // leader: the proposal's completion
	start   time.Time
}

// write runs a client write: on the leader it is validated by build (errors: nothing
// proposed), proposed, and answered when the commit condition holds; on a peon it is forwarded
// to the leader (unless it was itself forwarded); without a quorum or leader it waits.
func (m *Monitor) write(ctx context.Context, method string, req, reply proto.Message, forwarded bool,
	build func() (services.Update, error)) (*minimonv1.KVWriteReply, error) {
	wctx, cancel := waitCtx(ctx)
	defer cancel()
retry:
	var res writeResult
	err := m.await(wctx, func(now time.Time) bool {
		st := m.l.node.Status()
		switch {
		case st.Role == node.Peon && forwarded:
			// The peon that forwarded this saw us as leader; we are not (any more). Nothing is
			// proposed here: answer at once so it forwards to the leader it sees now, rather
			// than waiting here for a leadership that may never come back.
			res.err = status.Error(codes.Unavailable, errForwardNotLeader)
			return true
		case st.Role == node.Leader:
			// A resend of a recorded or in-flight write is answered from it (dedup.go).
			wid := writeIDOf(req)
			if v, ok := m.dedupTab().check(m.store, wid, func() bool { return m.l.node.Readable(now) }); ok {
				if v.wait {
					return false
				}
				res.reply, res.err = v.reply, v.err
				if v.attach != nil {
					res.reply, res.done, res.start = &minimonv1.KVWriteReply{Message: v.msg}, v.attach, now
				}
				return true
			}
			upd, err := build()
			if errors.Is(err, errWriteNotYet) {
				return false
			}
			if (err != nil || len(upd.Ops) == 0) && !m.l.node.Readable(now) {
				// A verdict from state alone (refused, or nothing to change) is a read: give
				// it only under a valid lease with nothing in flight (rule 4), so neither a
				// deposed leader nor a staged-but-uncommitted change decides it.
				return false
			}
			if err != nil {
				res.err = toStatus(err)
				return true
			}
			if len(upd.Ops) == 0 {
				res.reply = &minimonv1.KVWriteReply{Message: upd.Message}
				return true
			}
			dops, stage, err := m.dedupTab().prepare(m.store, wid, upd.Message, st.LastCommitted)
			if err != nil {
				res.err = status.Error(codes.Internal, err.Error())
				return true
			}
			val, err := services.Encode(services.Merge(upd.Ops, dops))
			if err != nil {
				res.err = status.Error(codes.Internal, err.Error())
				return true
			}
			ch, err := m.proposeWrite(now, val, stage)
			if err != nil {
				if errors.Is(err, paxos.ErrNotWriteable) || errors.Is(err, paxos.ErrNotLeader) {
					return false // recovering or the epoch is not released yet: wait
				}
				res.err = status.Error(codes.Internal, err.Error())
				return true
			}
			res.reply = &minimonv1.KVWriteReply{Message: upd.Message}
			res.done, res.start = ch, now
			return true
		case st.Role == node.Peon && !forwarded:
			for _, mi := range m.l.monmap.GetMons() {
				if mi.GetRank() == st.Leader {
					res.forward = mi.GetAddr()
					return true
				}
			}
			return false
		}
		return false
	})
	if err != nil {
		return nil, waitErr(ctx, err, "no quorum: no leader to take the write")
	}
	switch {
	case res.err != nil:
		return nil, res.err
	case res.forward != "":
		if err := m.forward(ctx, res.forward, method, req, reply); err != nil {
			if st, _ := status.FromError(err); st.Code() == codes.Unavailable && st.Message() == errForwardNotLeader {
				// It proposed nothing: forward again once our view of the leader has moved on.
				select {
				case <-wctx.Done():
				case <-time.After(forwardRetryDelay):
					m.lg.Debug("forwarded write reached a peon; forwarding again", zap.String("to", res.forward))
					goto retry
				}
			}
			return nil, err
		}
		// Every write reply has the message and version of KVWriteReply (ConfigWriteReply).
		r, ok := reply.(interface {
			GetMessage() string
			GetVersion() uint64
		})
		if !ok {
			return nil, status.Errorf(codes.Internal, "forwarded %s: unexpected reply %T", method, reply)
		}
		return &minimonv1.KVWriteReply{Message: r.GetMessage(), Version: r.GetVersion()}, nil
	case res.done == nil:
		return res.reply, nil // nothing to change
	}
	select {
	case r := <-res.done:
		if r.Err != nil {
			return nil, status.Errorf(codes.Unavailable, "outcome unknown: %v", r.Err)
		}
		if m.crashBeforeReply() {
			return nil, status.Error(codes.Unavailable, "monitor is stopping; outcome unknown")
		}
		m.met.commitLatency.Observe(time.Since(res.start).Seconds())
		res.reply.Version = r.Version
		return res.reply, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, status.Error(codes.Canceled, "request canceled; outcome unknown")
		}
		return nil, status.Error(codes.DeadlineExceeded, "deadline exceeded; outcome unknown")
	case <-m.stopping:
		return nil, status.Error(codes.Unavailable, "monitor is shutting down; outcome unknown")
	}
}

// forward sends a write to the leader over Peer.Forward and relays its reply (spec 6.8).
func (m *Monitor) forward(ctx context.Context, leaderAddr, method string, req, reply proto.Message) error {
	cc, err := m.peerConn(leaderAddr)
	if err != nil {
		return status.Errorf(codes.Unavailable, "cannot reach the leader at %s: %v", leaderAddr, err)
	}
	return Forward(ctx, minimonv1.NewPeerClient(cc), m.fsid, m.cfg.Name, method, req, reply)
}

// handleForward runs a write a peon forwarded (never forwarding it again: spec 6.8).
func (m *Monitor) handleForward(ctx context.Context, method string, b []byte) ([]byte, error) {
	cs := &clientServer{m: m}
	var reply proto.Message
	var err error
	switch method {
	case minimonv1.Monitor_KVSet_FullMethodName:
		req := &minimonv1.KVSetRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "forwarded %s: %v", method, err)
		}
		reply, err = cs.kvSet(ctx, req, true)
	case minimonv1.Monitor_KVRm_FullMethodName:
		req := &minimonv1.KVRmRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "forwarded %s: %v", method, err)
		}
		reply, err = cs.kvRm(ctx, req, true)
	case minimonv1.Monitor_ConfigSet_FullMethodName, minimonv1.Monitor_ConfigRm_FullMethodName,
		minimonv1.Monitor_ConfigReset_FullMethodName:
		reply, err = cs.handleForwardConfig(ctx, method, b)
	case minimonv1.Monitor_MonAdd_FullMethodName, minimonv1.Monitor_MonRemove_FullMethodName:
		reply, err = m.handleForwardMembers(ctx, method, b)
	default:
		return nil, status.Errorf(codes.Unimplemented, "forwarding %s: not implemented yet", method)
	}
	if err != nil {
		return nil, err
	}
	out, err := proto.Marshal(reply)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "forwarded %s: marshal reply: %v", method, err)
	}
	return out, nil
}

// peerConn returns the cached client connection to a monitor address (forwarding, sync).
func (m *Monitor) peerConn(addr string) (*grpc.ClientConn, error) {
	m.fwdMu.Lock()
	defer m.fwdMu.Unlock()
	select {
	case <-m.stopping:
		return nil, errStopping
	default:
	}
	if cc := m.fwdConns[addr]; cc != nil {
		return cc, nil
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxPeerMsgSize), grpc.MaxCallSendMsgSize(MaxPeerMsgSize))},
		peerDialOptions(m.cfg.Addr)...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	m.fwdConns[addr] = cc
	return cc, nil
}

// peerService is the monitor's minimon.v1.Peer: envelopes of members go to the transport,
// Forward to handleForward, Sync to the store sync provider, Probe is answered on the loop.
type peerService struct {
	minimonv1.UnimplementedPeerServer
	m    *Monitor
	send *peerServer
	fwd  *ForwardService
	sync *SyncProvider

	// members is a snapshot of the member map for the Send filter, refreshed from the loop
	// (which owns the map): a stream goroutine must not read loop state.
	members   atomic.Pointer[memberView]
	nonMember prometheus.Counter
}

// Bounds on refreshing the member snapshot: at most every memberViewMinAge on a miss (a flood
// of non-member envelopes costs the loop little), at least every memberViewMaxAge.
const (
	memberViewMinAge = 100 * time.Millisecond
	memberViewMaxAge = time.Second
)

// memberView is who may send envelopes: the members other than us, by rank with their names.
type memberView struct {
	self  int32
	names map[int32]string
	at    time.Time
}

func newMemberView(self int32, mm *minimonv1.MonMap, at time.Time) *memberView {
	v := &memberView{self: self, names: make(map[int32]string, len(mm.GetMons())), at: at}
	for _, mi := range mm.GetMons() {
		v.names[mi.GetRank()] = mi.GetName()
	}
	return v
}

// member: the envelope claims a member's rank and carries that member's name (the transport
// stamps both). Nothing authenticates the claim: this filters misconfigured and stale
// monitors, not a forger that copies a member's rank and name.
func (v *memberView) member(env *minimonv1.PeerEnvelope) bool {
	r := env.GetFromRank()
	name, ok := v.names[r]
	return ok && r != v.self && name == env.GetFromName()
}

// newPeerService builds the Peer service; it runs in New, before the loop, so it may read
// the member map directly once.
func (m *Monitor) newPeerService() *peerService {
	p := &peerService{
		m:    m,
		send: &peerServer{t: m.tr},
		fwd:  ForwardServer(m.fsid, m.handleForward),
		sync: &SyncProvider{
			FSID: m.fsid, Store: m.store,
			MaxBytes: m.cfg.MonSyncMaxPayloadSize, MaxKeys: m.cfg.MonSyncMaxPayloadKeys,
			Busy:   func() bool { return m.syncing.Load() || m.isStopping() },
			Logger: m.lg.Named("sync"),
		},
		nonMember: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimon_peer_dropped_nonmember_total",
			Help: "Peer envelopes dropped because the sender is not a member (unknown rank, " +
				"our own rank, or a name that does not match the rank's member).",
		}),
	}
	p.members.Store(newMemberView(m.l.rank, m.l.monmap, time.Now()))
	m.met.reg.MustRegister(p.nonMember)
	return p
}

// Send passes only members' envelopes on to the transport (issue 3: a non-member takes no
// part in elections or Paxos). The node drops non-members too; this also counts them.
func (p *peerService) Send(stream grpc.ClientStreamingServer[minimonv1.PeerEnvelope, minimonv1.SendReply]) error {
	return p.send.Send(&memberStream{ClientStreamingServer: stream, p: p})
}

// memberStream is a Send stream whose Recv skips (and counts) non-members' envelopes.
type memberStream struct {
	grpc.ClientStreamingServer[minimonv1.PeerEnvelope, minimonv1.SendReply]
	p      *peerService
	warned bool
}

func (s *memberStream) Recv() (*minimonv1.PeerEnvelope, error) {
	for {
		env, err := s.ClientStreamingServer.Recv()
		if err != nil {
			return nil, err
		}
		if s.p.fromMember(s.Context(), env) {
			return env, nil
		}
		if !s.warned {
			s.warned = true // once per stream: a misconfigured monitor would flood the log
			var addr string
			if pr, ok := grpcpeer.FromContext(s.Context()); ok && pr.Addr != nil {
				addr = pr.Addr.String()
			}
			s.p.m.lg.Warn("dropping envelopes of a non-member", zap.Int32("from_rank", env.GetFromRank()),
				zap.String("from_name", env.GetFromName()), zap.String("remote", addr))
		}
	}
}

// fromMember reports whether env may go on to the transport. Envelopes of another cluster
// pass: the transport drops and counts those itself.
func (p *peerService) fromMember(ctx context.Context, env *minimonv1.PeerEnvelope) bool {
	if env.GetFsid() != p.m.fsid {
		return true
	}
	v := p.members.Load()
	age := time.Since(v.at)
	if age >= memberViewMaxAge || (age >= memberViewMinAge && !v.member(env)) {
		v = p.refreshMembers(ctx, v)
	}
	if v.member(env) {
		return true
	}
	p.nonMember.Inc()
	return false
}

// refreshMembers takes a new snapshot of the member map on the loop. On failure (stopping, a
// loop not running yet) it keeps old's members but restarts its age, so a stream does not wait
// for the loop on every envelope.
func (p *peerService) refreshMembers(ctx context.Context, old *memberView) *memberView {
	ctx, cancel := context.WithTimeout(ctx, memberViewMaxAge)
	defer cancel()
	var v *memberView
	if err := p.m.onLoop(ctx, func(now time.Time) { v = newMemberView(p.m.l.rank, p.m.l.monmap, now) }); err != nil {
		v = &memberView{self: old.self, names: old.names, at: time.Now()}
	}
	p.members.Store(v)
	return v
}

func (p *peerService) Forward(ctx context.Context, req *minimonv1.ForwardRequest) (*minimonv1.ForwardReply, error) {
	return p.fwd.Forward(ctx, req)
}

func (p *peerService) Sync(req *minimonv1.SyncRequest, stream grpc.ServerStreamingServer[minimonv1.SyncChunk]) error {
	return p.sync.Sync(req, stream)
}

// Probe answers anyone, member or not (spec 2.3 step 4; issue 3: a non-member gets answers
// to its probes only), with the REPLY a member gets plus the member map. It changes no state:
// the spec's "hopelessly behind" check and extra probe peers are for members' PROBEs.
func (p *peerService) Probe(ctx context.Context, req *minimonv1.ProbeMessage) (*minimonv1.ProbeMessage, error) {
	// An empty fsid is allowed: a joining monitor learns it from this answer.
	if f := req.GetFsid(); f != "" && f != p.m.fsid {
		return nil, status.Errorf(codes.PermissionDenied, "monitor: probe of another cluster (fsid %s)", f)
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	var r *minimonv1.ProbeMessage
	if err := p.m.onLoop(wctx, func(time.Time) { r = p.m.probeReply() }); err != nil {
		return nil, waitErr(ctx, err, "monitor busy")
	}
	return r, nil
}

// probeReply is the node's probe REPLY (node.probeMsg) with our name, fsid and member map;
// it runs on the loop.
func (m *Monitor) probeReply() *minimonv1.ProbeMessage {
	st := m.l.node.Status()
	r := &minimonv1.ProbeMessage{
		Op: minimonv1.ProbeMessage_REPLY, Name: m.cfg.Name, Rank: m.l.rank, Fsid: m.fsid,
		// As the node reports it: the founding map (epoch 0) counts as epoch 1.
		MonmapEpoch:    max(m.l.monmap.GetEpoch(), 1),
		FirstCommitted: st.FirstCommitted, LastCommitted: st.LastCommitted,
		ElectionEpoch: st.ElectionEpoch,
		Monmap:        m.memberMap(),
	}
	if st.Role.InQuorum() {
		r.Quorum = slices.Clone(st.Quorum)
		r.Leader, r.HasLeader = st.Leader, true
	}
	m.addStats(r)
	return r
}

// ---- the client service ----

type clientServer struct {
	minimonv1.UnimplementedMonitorServer
	m *Monitor
}

func (s *clientServer) MonStatus(ctx context.Context, _ *minimonv1.MonStatusRequest) (*minimonv1.MonStatusReply, error) {
	var r *minimonv1.MonStatusReply
	if err := s.m.onLoop(ctx, func(time.Time) { r = s.m.monStatus() }); err != nil {
		return nil, waitErr(ctx, err, "monitor busy")
	}
	return r, nil
}

func (s *clientServer) Status(ctx context.Context, _ *minimonv1.StatusRequest) (*minimonv1.StatusReply, error) {
	var r *minimonv1.StatusReply
	err := s.m.inQuorum(ctx, func(_ time.Time, st node.Status) { r = s.m.statusReply(st) })
	return r, err
}

func (s *clientServer) Health(ctx context.Context, _ *minimonv1.HealthRequest) (*minimonv1.HealthReply, error) {
	var r *minimonv1.HealthReply
	err := s.m.inQuorum(ctx, func(_ time.Time, st node.Status) { r = s.m.healthReply(st) })
	return r, err
}

func (s *clientServer) QuorumStatus(ctx context.Context, _ *minimonv1.QuorumStatusRequest) (*minimonv1.QuorumStatusReply, error) {
	var r *minimonv1.QuorumStatusReply
	err := s.m.inQuorum(ctx, func(now time.Time, st node.Status) { r = s.m.quorumStatus(now, st) })
	return r, err
}

func (s *clientServer) MonStat(ctx context.Context, _ *minimonv1.MonStatRequest) (*minimonv1.MonStatReply, error) {
	var r *minimonv1.MonStatReply
	err := s.m.inQuorum(ctx, func(_ time.Time, st node.Status) { r = s.m.monStat(st) })
	return r, err
}

func (s *clientServer) MonDump(ctx context.Context, req *minimonv1.MonDumpRequest) (*minimonv1.MonDumpReply, error) {
	var r *minimonv1.MonDumpReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		if req.GetEpoch() == 0 {
			r = &minimonv1.MonDumpReply{Monmap: s.m.currentMonmap()}
			return nil
		}
		mm, err := s.m.l.mm.At(s.m.store, req.GetEpoch())
		if err != nil {
			return err
		}
		r = &minimonv1.MonDumpReply{Monmap: mm}
		return nil
	})
	return r, err
}

func (s *clientServer) KVGet(ctx context.Context, req *minimonv1.KVGetRequest) (*minimonv1.KVGetReply, error) {
	var r *minimonv1.KVGetReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		v, err := s.m.l.kv.Get(s.m.store, req.GetKey())
		r = &minimonv1.KVGetReply{Value: v}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s *clientServer) KVExists(ctx context.Context, req *minimonv1.KVExistsRequest) (*minimonv1.KVExistsReply, error) {
	var r *minimonv1.KVExistsReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		ok, err := s.m.l.kv.Exists(s.m.store, req.GetKey())
		r = &minimonv1.KVExistsReply{Exists: ok}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s *clientServer) KVList(ctx context.Context, req *minimonv1.KVListRequest) (*minimonv1.KVListReply, error) {
	var r *minimonv1.KVListReply
	err := s.m.readLocal(ctx, func(time.Time) error {
		keys, trunc, err := s.m.l.kv.List(s.m.store, req.GetPrefix(), int(req.GetLimit()))
		r = &minimonv1.KVListReply{Keys: keys, Truncated: trunc}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s *clientServer) KVSet(ctx context.Context, req *minimonv1.KVSetRequest) (*minimonv1.KVWriteReply, error) {
	return s.kvSet(ctx, req, false)
}

func (s *clientServer) kvSet(ctx context.Context, req *minimonv1.KVSetRequest, forwarded bool) (*minimonv1.KVWriteReply, error) {
	return s.m.write(ctx, minimonv1.Monitor_KVSet_FullMethodName, req, &minimonv1.KVWriteReply{}, forwarded,
		func() (services.Update, error) { return s.m.l.kv.Set(req.GetKey(), req.GetValue()) })
}

func (s *clientServer) KVRm(ctx context.Context, req *minimonv1.KVRmRequest) (*minimonv1.KVWriteReply, error) {
	return s.kvRm(ctx, req, false)
}

func (s *clientServer) kvRm(ctx context.Context, req *minimonv1.KVRmRequest, forwarded bool) (*minimonv1.KVWriteReply, error) {
	return s.m.write(ctx, minimonv1.Monitor_KVRm_FullMethodName, req, &minimonv1.KVWriteReply{}, forwarded,
		func() (services.Update, error) { return s.m.l.kv.Rm(s.m.store, req.GetKey()) })
}
