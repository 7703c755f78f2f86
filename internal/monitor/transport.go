package monitor

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// MaxPeerMsgSize bounds one peer envelope on both ends. The server that registers the Peer
// service must set grpc.MaxRecvMsgSize(MaxPeerMsgSize); senders drop larger envelopes before
// they reach the wire, so one bad message cannot break a stream over and over.
const MaxPeerMsgSize = 16 << 20

// Defaults for TransportConfig fields left zero.
const (
	DefaultPeerQueueSize  = 1024
	DefaultInboxSize      = 4096
	DefaultMinBackoff     = 50 * time.Millisecond
	DefaultMaxBackoff     = time.Second
	defaultConnectTimeout = time.Second
)

// TransportConfig configures a Transport.
type TransportConfig struct {
	Name  string           // own monitor name, stamped on every outgoing envelope
	Rank  int32            // own rank, stamped on every outgoing envelope
	FSID  string           // cluster id: stamped on outgoing envelopes, checked on incoming ones
	Peers map[int32]string // rank -> address; an entry for Rank itself is ignored

	Logger *zap.Logger // nil means zap.NewNop()

	// DialOptions are appended after the defaults (insecure credentials, connect backoff
	// MinBackoff..MaxBackoff, MaxCallSendMsgSize), so they can override them.
	DialOptions []grpc.DialOption

	QueueSize  int           // outbound envelopes buffered per peer; default 1024
	InboxSize  int           // inbound envelopes buffered for the event loop; default 4096
	MinBackoff time.Duration // first wait before reopening a broken stream; default 50ms
	MaxBackoff time.Duration // cap of the doubling wait; default 1s

	// Handler, when set, is called for every accepted inbound envelope, in arrival order, on
	// one goroutine owned by the Transport. When nil, the event loop reads Inbox() instead.
	// A slow handler never stalls the network: the inbox fills and further envelopes are
	// dropped and counted.
	Handler func(*minimonv1.PeerEnvelope)
}

// TransportStats are cumulative counters since NewTransport.
type TransportStats struct {
	Sent               uint64 // envelopes written to a peer stream
	DroppedQueueFull   uint64 // oldest envelope dropped because a peer's queue was full
	DroppedUnknownPeer uint64 // Send to a rank with no peer entry (or after Close)
	DroppedOversized   uint64 // outgoing envelope larger than MaxPeerMsgSize
	DroppedSendError   uint64 // outgoing envelope lost to a stream error other than a break
	Reconnects         uint64 // streams reopened after a previous stream to the peer ended
	Received           uint64 // inbound envelopes accepted into the inbox
	DroppedWrongFSID   uint64 // inbound envelopes of another cluster
	DroppedInvalid     uint64 // inbound envelopes without a body
	DroppedInboxFull   uint64 // inbound envelopes dropped because the inbox was full
}

type transportCounters struct {
	sent, droppedQueueFull, droppedUnknownPeer, droppedOversized, droppedSendError,
	reconnects, received, droppedWrongFSID, droppedInvalid, droppedInboxFull atomic.Uint64
}

// Transport carries PeerEnvelopes between monitors over gRPC. Outbound, each peer has a
// bounded FIFO queue drained by one goroutine that owns that peer's client stream, so
// envelopes to one peer leave in Send order and the caller (the event loop) never blocks.
// Envelopes may be lost when a stream breaks or a queue overflows; the protocol copes with
// loss through its timeouts (ceph-mon-spec.md 0.2). Inbound, the Peer service feeds a bounded
// inbox.
type Transport struct {
	name  string
	rank  int32
	fsid  string
	lg    *zap.Logger
	dial  []grpc.DialOption
	qsize int
	minBo time.Duration
	maxBo time.Duration

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.RWMutex
	peers  map[int32]*peer
	closed bool

	inbox chan *minimonv1.PeerEnvelope
	stats transportCounters

	closeOnce sync.Once
}

// peer is one outbound link: its queue and the goroutine that drains it.
type peer struct {
	rank   int32
	addr   string
	q      chan *minimonv1.PeerEnvelope
	conn   *grpc.ClientConn
	ctx    context.Context
	cancel context.CancelFunc
}

// NewTransport starts one sender goroutine per peer (connections are made lazily) and, if
// cfg.Handler is set, the inbox dispatcher. Call Close to stop them.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.FSID == "" {
		return nil, errors.New("monitor: transport needs an fsid")
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	t := &Transport{
		name:  cfg.Name,
		rank:  cfg.Rank,
		fsid:  cfg.FSID,
		lg:    lg.Named("transport"),
		qsize: orDefault(cfg.QueueSize, DefaultPeerQueueSize),
		minBo: orDefault(cfg.MinBackoff, DefaultMinBackoff),
		maxBo: orDefault(cfg.MaxBackoff, DefaultMaxBackoff),
		peers: make(map[int32]*peer),
		inbox: make(chan *minimonv1.PeerEnvelope, orDefault(cfg.InboxSize, DefaultInboxSize)),
	}
	if t.maxBo < t.minBo {
		t.maxBo = t.minBo
	}
	t.dial = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's own reconnect backoff defaults to 1s..120s: far too slow for failover.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  t.minBo,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   t.maxBo,
			},
			MinConnectTimeout: defaultConnectTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxPeerMsgSize)),
	}, cfg.DialOptions...)
	t.ctx, t.cancel = context.WithCancel(context.Background())

	if cfg.Handler != nil {
		t.wg.Add(1)
		go t.dispatch(cfg.Handler)
	}
	t.SetPeers(cfg.Peers)
	return t, nil
}

func orDefault[T int | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// Inbox is the channel of accepted inbound envelopes, for an event loop that selects on it.
// Do not read it when TransportConfig.Handler is set.
func (t *Transport) Inbox() <-chan *minimonv1.PeerEnvelope { return t.inbox }

// Stats returns a snapshot of the counters.
func (t *Transport) Stats() TransportStats {
	c := &t.stats
	return TransportStats{
		Sent:               c.sent.Load(),
		DroppedQueueFull:   c.droppedQueueFull.Load(),
		DroppedUnknownPeer: c.droppedUnknownPeer.Load(),
		DroppedOversized:   c.droppedOversized.Load(),
		DroppedSendError:   c.droppedSendError.Load(),
		Reconnects:         c.reconnects.Load(),
		Received:           c.received.Load(),
		DroppedWrongFSID:   c.droppedWrongFSID.Load(),
		DroppedInvalid:     c.droppedInvalid.Load(),
		DroppedInboxFull:   c.droppedInboxFull.Load(),
	}
}

// Send queues env for the peer of rank to and returns at once. The transport sends a copy
// stamped with its fsid, rank and name; env and its body must not be modified afterwards
// (they are read by the peer's sender goroutine). When the peer's queue is full the oldest
// queued envelope is dropped: the newest state is the most useful to a peer that catches up.
func (t *Transport) Send(to int32, env *minimonv1.PeerEnvelope) {
	t.mu.RLock()
	p := t.peers[to]
	closed := t.closed
	rank := t.rank // changes when the member map shifts ranks (setRank)
	t.mu.RUnlock()
	if p == nil || closed || env == nil {
		t.stats.droppedUnknownPeer.Add(1)
		return
	}
	out := &minimonv1.PeerEnvelope{
		Fsid:     t.fsid,
		FromRank: rank,
		FromName: t.name,
		Epoch:    env.GetEpoch(),
		Body:     env.Body,
	}
	for {
		select {
		case p.q <- out:
			return
		default:
		}
		select {
		case <-p.q:
			t.stats.droppedQueueFull.Add(1)
		default:
		}
	}
}

// SetPeers replaces the membership: links to ranks no longer present (or whose address
// changed) are stopped with their queued envelopes, new ranks get a link. It does not wait
// for stopped links to wind down; Close does.
func (t *Transport) SetPeers(peers map[int32]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	for rank, p := range t.peers {
		if addr, ok := peers[rank]; !ok || addr != p.addr || rank == t.rank {
			p.cancel()
			delete(t.peers, rank)
			t.lg.Info("peer removed", zap.Int32("rank", rank), zap.String("addr", p.addr))
		}
	}
	for rank, addr := range peers {
		if rank == t.rank || t.peers[rank] != nil {
			continue
		}
		conn, err := grpc.NewClient(addr, t.dial...)
		if err != nil {
			// A malformed address will not fix itself: Send to this rank drops and counts.
			t.lg.Error("cannot create peer client", zap.Int32("rank", rank),
				zap.String("addr", addr), zap.Error(err))
			continue
		}
		p := &peer{rank: rank, addr: addr, conn: conn, q: make(chan *minimonv1.PeerEnvelope, t.qsize)}
		p.ctx, p.cancel = context.WithCancel(t.ctx)
		t.peers[rank] = p
		t.wg.Add(1)
		go t.runPeer(p)
		t.lg.Info("peer added", zap.Int32("rank", rank), zap.String("addr", addr))
	}
}

// Close stops every goroutine the transport started and waits for them. Server handlers
// still running on a registered gRPC server return Unavailable from then on.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.peers = map[int32]*peer{}
		t.mu.Unlock()
		t.cancel()
		t.wg.Wait()
	})
	return nil
}

// runPeer owns the client stream to one peer: it opens a stream (waiting for the connection
// to be ready), drains the queue into it, and reopens it with capped exponential backoff
// whenever it breaks.
func (t *Transport) runPeer(p *peer) {
	defer t.wg.Done()
	defer p.conn.Close()
	client := minimonv1.NewPeerClient(p.conn)
	lg := t.lg.With(zap.Int32("peer", p.rank), zap.String("addr", p.addr))
	var pending *minimonv1.PeerEnvelope // taken from the queue, not yet written
	bo := t.minBo
	opened := false
	for {
		sctx, scancel := context.WithCancel(p.ctx)
		stream, err := client.Send(sctx, grpc.WaitForReady(true))
		if err == nil {
			if opened {
				t.stats.reconnects.Add(1)
				lg.Info("peer stream reopened")
			}
			opened = true
			start := time.Now()
			pending = t.pump(p, stream, scancel, pending)
			if time.Since(start) >= t.maxBo {
				bo = t.minBo // the stream was healthy for a while: start the backoff over
			}
		} else if p.ctx.Err() == nil {
			lg.Debug("cannot open peer stream", zap.Error(err))
		}
		scancel()
		if p.ctx.Err() != nil {
			return
		}
		timer := time.NewTimer(bo)
		select {
		case <-p.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		bo = min(2*bo, t.maxBo)
	}
}

// pump writes queued envelopes to stream until the stream breaks or the link stops. It
// returns the envelope that was in hand when the stream broke (to retry on the next stream),
// or nil.
func (t *Transport) pump(p *peer, stream grpc.ClientStreamingClient[minimonv1.PeerEnvelope, minimonv1.SendReply],
	cancel context.CancelFunc, pending *minimonv1.PeerEnvelope) *minimonv1.PeerEnvelope {
	// The server replies only when it ends the stream, so a pending receive tells us at once
	// that the stream broke, instead of on the next write (which could be lost silently).
	broken := make(chan struct{})
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(broken)
		_ = stream.RecvMsg(new(minimonv1.SendReply))
	}()
	defer func() {
		cancel() // ends the stream, hence RecvMsg
		<-broken
	}()

	for {
		if pending == nil {
			select {
			case pending = <-p.q:
			case <-broken:
				return nil
			case <-p.ctx.Done():
				return nil
			}
		}
		if proto.Size(pending) > MaxPeerMsgSize {
			t.stats.droppedOversized.Add(1)
			t.lg.Warn("dropping oversized peer envelope", zap.Int32("peer", p.rank),
				zap.Int("bytes", proto.Size(pending)))
			pending = nil
			continue
		}
		if err := stream.Send(pending); err != nil {
			if errors.Is(err, io.EOF) {
				// The stream broke before this envelope was written: keep it for the next one.
				return pending
			}
			t.stats.droppedSendError.Add(1)
			t.lg.Warn("peer stream send failed", zap.Int32("peer", p.rank), zap.Error(err))
			return nil
		}
		t.stats.sent.Add(1)
		pending = nil
	}
}

// dispatch hands inbox envelopes to the configured handler, one at a time.
func (t *Transport) dispatch(h func(*minimonv1.PeerEnvelope)) {
	defer t.wg.Done()
	for {
		select {
		case env := <-t.inbox:
			h(env)
		case <-t.ctx.Done():
			return
		}
	}
}

// deliver checks an inbound envelope and puts it in the inbox without blocking.
func (t *Transport) deliver(env *minimonv1.PeerEnvelope) {
	switch {
	case env.GetFsid() != t.fsid:
		t.stats.droppedWrongFSID.Add(1)
		return
	case env.GetBody() == nil:
		t.stats.droppedInvalid.Add(1)
		return
	}
	// Count before the hand-off: whoever takes the envelope from the inbox must see it counted.
	t.stats.received.Add(1)
	select {
	case t.inbox <- env:
	default:
		t.stats.received.Add(^uint64(0))
		t.stats.droppedInboxFull.Add(1)
	}
}

// RegisterPeerServer registers the Peer service on s; envelopes received go to this
// transport's inbox. s must be built with grpc.MaxRecvMsgSize(MaxPeerMsgSize).
func (t *Transport) RegisterPeerServer(s grpc.ServiceRegistrar) {
	minimonv1.RegisterPeerServer(s, &peerServer{t: t})
}

type peerServer struct {
	minimonv1.UnimplementedPeerServer
	t *Transport
}

// Send receives one sender's stream. Receiving runs on its own goroutine so the handler can
// return as soon as the transport closes (a blocked Recv would otherwise hold up the gRPC
// server's GracefulStop while the sender stays connected).
func (s *peerServer) Send(stream grpc.ClientStreamingServer[minimonv1.PeerEnvelope, minimonv1.SendReply]) error {
	t := s.t
	errc := make(chan error, 1)
	// Add under the lock that Close takes before Wait, so no Add can race with Wait.
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return status.Error(codes.Unavailable, "monitor: transport closed")
	}
	t.wg.Add(1)
	t.mu.RUnlock()
	go func() {
		defer t.wg.Done()
		warned := false
		for {
			env, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if t.ctx.Err() != nil {
				errc <- status.Error(codes.Unavailable, "monitor: transport closed")
				return
			}
			if env.GetFsid() != t.fsid && !warned {
				warned = true // once per stream: a misconfigured peer would flood the log
				t.lg.Warn("dropping envelopes of another cluster", zap.String("fsid", env.GetFsid()),
					zap.Int32("from_rank", env.GetFromRank()), zap.String("from_name", env.GetFromName()))
			}
			t.deliver(env)
		}
	}()
	select {
	case err := <-errc:
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&minimonv1.SendReply{})
		}
		return err
	case <-t.ctx.Done():
		return status.Error(codes.Unavailable, "monitor: transport closed")
	}
}
