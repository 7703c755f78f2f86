package monitor

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testFSID = "2f9b7c1e-test-fsid"

// waitTimeout only bounds a hang; no test asserts how fast anything is.
const waitTimeout = 10 * time.Second

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// serve runs a Peer server for tr on lis and returns a function that stops it and waits for
// Serve to return (it is also registered as a cleanup; calling it twice is fine).
func serve(t *testing.T, lis net.Listener, tr *Transport) (stop func()) {
	t.Helper()
	s := grpc.NewServer(grpc.MaxRecvMsgSize(MaxPeerMsgSize))
	tr.RegisterPeerServer(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func newTransport(t *testing.T, cfg TransportConfig) *Transport {
	t.Helper()
	if cfg.FSID == "" {
		cfg.FSID = testFSID
	}
	cfg.Logger = zaptest.NewLogger(t)
	tr, err := NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func probe(i uint64) *minimonv1.PeerEnvelope {
	return &minimonv1.PeerEnvelope{
		Epoch: 7,
		Body: &minimonv1.PeerEnvelope_Probe{Probe: &minimonv1.ProbeMessage{
			Op: minimonv1.ProbeMessage_PROBE, LastCommitted: i,
		}},
	}
}

// recvN reads n envelopes from ch and returns their probe last_committed values.
func recvN(t *testing.T, ch <-chan *minimonv1.PeerEnvelope, n int) []*minimonv1.PeerEnvelope {
	t.Helper()
	out := make([]*minimonv1.PeerEnvelope, 0, n)
	deadline := time.After(waitTimeout)
	for len(out) < n {
		select {
		case env := <-ch:
			out = append(out, env)
		case <-deadline:
			t.Fatalf("received %d of %d envelopes", len(out), n)
		}
	}
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pair builds A (rank 0) sending to B (rank 1), with B served on its own listener.
func pair(t *testing.T, cfgA TransportConfig) (a, b *Transport, addrB string, stopB func()) {
	t.Helper()
	lis := listen(t)
	addrB = lis.Addr().String()
	b = newTransport(t, TransportConfig{Name: "b", Rank: 1})
	stopB = serve(t, lis, b)
	cfgA.Name, cfgA.Rank = "a", 0
	cfgA.Peers = map[int32]string{1: addrB}
	a = newTransport(t, cfgA)
	return a, b, addrB, stopB
}

func TestTransportOrderedDelivery(t *testing.T) {
	const n = 1000
	a, b, _, _ := pair(t, TransportConfig{QueueSize: 2 * n})
	for i := range uint64(n) {
		a.Send(1, probe(i))
	}
	got := recvN(t, b.Inbox(), n)
	for i, env := range got {
		if v := env.GetProbe().GetLastCommitted(); v != uint64(i) {
			t.Fatalf("envelope %d carries %d: delivery out of order", i, v)
		}
		if env.GetFsid() != testFSID || env.GetFromRank() != 0 || env.GetFromName() != "a" || env.GetEpoch() != 7 {
			t.Fatalf("envelope %d not stamped: fsid=%q rank=%d name=%q epoch=%d", i,
				env.GetFsid(), env.GetFromRank(), env.GetFromName(), env.GetEpoch())
		}
	}
	if st := a.Stats(); st.Sent != n || st.DroppedQueueFull != 0 {
		t.Fatalf("sender stats %+v", st)
	}
	if st := b.Stats(); st.Received != n {
		t.Fatalf("receiver stats %+v", st)
	}
}

func TestTransportSendDoesNotMutateCallerEnvelope(t *testing.T) {
	a, b, _, _ := pair(t, TransportConfig{})
	env := probe(1)
	a.Send(1, env)
	recvN(t, b.Inbox(), 1)
	if env.GetFsid() != "" || env.GetFromName() != "" {
		t.Fatalf("Send stamped the caller's envelope: %v", env)
	}
}

func TestTransportReconnectAfterReceiverRestart(t *testing.T) {
	a, b, addrB, stopB := pair(t, TransportConfig{})
	a.Send(1, probe(0))
	recvN(t, b.Inbox(), 1)

	stopB()
	// Sent while B is down: these may or may not arrive (loss across reconnects is allowed),
	// but whatever arrives must keep the order.
	for i := uint64(1); i < 50; i++ {
		a.Send(1, probe(i))
	}
	lis, err := net.Listen("tcp", addrB)
	if err != nil {
		t.Fatalf("relisten on %s: %v", addrB, err)
	}
	serve(t, lis, b)
	eventually(t, "stream reopened", func() bool { return a.Stats().Reconnects >= 1 })

	for i := uint64(100); i < 200; i++ {
		a.Send(1, probe(i))
	}
	var after []uint64
	last := uint64(0)
	deadline := time.After(waitTimeout)
	for len(after) < 100 {
		select {
		case env := <-b.Inbox():
			v := env.GetProbe().GetLastCommitted()
			if v <= last {
				t.Fatalf("received %d after %d: order broken across the reconnect", v, last)
			}
			last = v
			if v >= 100 {
				after = append(after, v)
			}
		case <-deadline:
			t.Fatalf("received %d of the 100 envelopes sent after the restart", len(after))
		}
	}
	for i, v := range after {
		if v != uint64(100+i) {
			t.Fatalf("after restart: position %d carries %d", i, v)
		}
	}
}

func TestTransportWrongFSIDDropped(t *testing.T) {
	lis := listen(t)
	b := newTransport(t, TransportConfig{Name: "b", Rank: 1})
	serve(t, lis, b)
	other := newTransport(t, TransportConfig{Name: "x", Rank: 0, FSID: "other-cluster",
		Peers: map[int32]string{1: lis.Addr().String()}})
	good := newTransport(t, TransportConfig{Name: "a", Rank: 0,
		Peers: map[int32]string{1: lis.Addr().String()}})

	for i := range uint64(10) {
		other.Send(1, probe(i))
	}
	eventually(t, "wrong-fsid drops counted", func() bool { return b.Stats().DroppedWrongFSID == 10 })
	good.Send(1, probe(42))
	env := recvN(t, b.Inbox(), 1)[0]
	if env.GetFsid() != testFSID || env.GetProbe().GetLastCommitted() != 42 {
		t.Fatalf("first envelope in the inbox is %v, want the good sender's 42", env)
	}
	if st := b.Stats(); st.Received != 1 || st.DroppedWrongFSID != 10 {
		t.Fatalf("receiver stats %+v", st)
	}
}

func TestTransportSendNeverBlocksWhenPeerDown(t *testing.T) {
	lis := listen(t)
	addr := lis.Addr().String()
	_ = lis.Close() // nobody listens there for now
	const q, n = 16, 10000
	a := newTransport(t, TransportConfig{Name: "a", Rank: 0, QueueSize: q, Peers: map[int32]string{1: addr}})

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range uint64(n) {
			a.Send(1, probe(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Send blocked while the peer is down")
	}
	// The sender goroutine cannot take anything from the queue without a stream, so exactly
	// the overflow was dropped.
	if st := a.Stats(); st.DroppedQueueFull != n-q || st.Sent != 0 {
		t.Fatalf("stats %+v, want %d dropped and none sent", st, n-q)
	}

	// Drop-oldest: once the peer comes up it gets the newest q envelopes, in order.
	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	b := newTransport(t, TransportConfig{Name: "b", Rank: 1})
	serve(t, lis2, b)
	for i, env := range recvN(t, b.Inbox(), q) {
		if v := env.GetProbe().GetLastCommitted(); v != uint64(n-q+i) {
			t.Fatalf("position %d carries %d, want %d", i, v, n-q+i)
		}
	}
}

func TestTransportSetPeers(t *testing.T) {
	lis := listen(t)
	b := newTransport(t, TransportConfig{Name: "b", Rank: 1})
	serve(t, lis, b)
	a := newTransport(t, TransportConfig{Name: "a", Rank: 0})

	a.Send(1, probe(1))
	if st := a.Stats(); st.DroppedUnknownPeer != 1 {
		t.Fatalf("send to an unknown rank: stats %+v", st)
	}
	a.SetPeers(map[int32]string{0: "ignored-self:1", 1: lis.Addr().String()})
	a.Send(1, probe(2))
	if v := recvN(t, b.Inbox(), 1)[0].GetProbe().GetLastCommitted(); v != 2 {
		t.Fatalf("got %d, want 2", v)
	}
	a.Send(0, probe(3)) // self is never dialled
	a.SetPeers(nil)
	a.Send(1, probe(4))
	if st := a.Stats(); st.DroppedUnknownPeer != 3 {
		t.Fatalf("stats %+v, want 3 unknown-peer drops", st)
	}
}

func TestTransportCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	var (
		lis   []net.Listener
		addrs = map[int32]string{}
		trs   []*Transport
		stops []func()
		mu    sync.Mutex
		got   = map[int32]int{}
	)
	for r := range int32(3) {
		l := listen(t)
		lis = append(lis, l)
		addrs[r] = l.Addr().String()
	}
	for r := range int32(3) {
		tr := newTransport(t, TransportConfig{Name: string(rune('a' + r)), Rank: r, Peers: addrs,
			Handler: func(env *minimonv1.PeerEnvelope) {
				mu.Lock()
				got[r]++
				mu.Unlock()
			}})
		trs = append(trs, tr)
		stops = append(stops, serve(t, lis[r], tr))
	}
	for i := range uint64(50) {
		for from, tr := range trs {
			for to := range int32(3) {
				if int32(from) != to {
					tr.Send(to, probe(i))
				}
			}
		}
	}
	eventually(t, "all envelopes handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[0] == 100 && got[1] == 100 && got[2] == 100
	})
	// Close the transports while the servers still run: handlers must return on their own.
	for _, tr := range trs {
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range trs {
		_ = tr.Close() // idempotent
		tr.Send(1, probe(0))
	}
	for _, stop := range stops {
		stop()
	}
	goleak.VerifyNone(t, ignore)
}

// rawCodec lets a test put arbitrary bytes on the wire of the Peer service.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, errors.New("rawCodec: want []byte")
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return errors.New("rawCodec: want *[]byte")
	}
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// sendRaw opens a Peer.Send stream, writes payload as one message and returns the status the
// server ended the stream with.
func sendRaw(t *testing.T, conn *grpc.ClientConn, payload []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/minimon.v1.Peer/Send",
		grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SendMsg(payload) // may fail with io.EOF if the server already ended the stream
	_ = st.CloseSend()
	var reply []byte
	return st.RecvMsg(&reply)
}

func TestTransportGarbageAndOversizedEnvelopes(t *testing.T) {
	a, b, addrB, _ := pair(t, TransportConfig{})
	conn, err := grpc.NewClient(addrB, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Not a protobuf at all: the server rejects the stream.
	if err := sendRaw(t, conn, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); status.Code(err) != codes.Internal {
		t.Fatalf("garbage: got %v, want Internal", err)
	}
	// Seeded random bytes: whatever they decode to, nothing is accepted and nothing panics.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		buf := make([]byte, rng.IntN(256))
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		_ = sendRaw(t, conn, buf)
	}
	// Over the server's MaxRecvMsgSize.
	if err := sendRaw(t, conn, make([]byte, MaxPeerMsgSize+1)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized: got %v, want ResourceExhausted", err)
	}
	// Well-formed but without a body.
	client := minimonv1.NewPeerClient(conn)
	stream, err := client.Send(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&minimonv1.PeerEnvelope{Fsid: testFSID, FromRank: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.DroppedInvalid != 1 || st.Received != 0 {
		t.Fatalf("receiver stats %+v: want one invalid envelope and nothing accepted", st)
	}

	// The sender drops an envelope too large to send instead of breaking its stream with it,
	// and the link keeps working.
	big := probe(1)
	big.GetProbe().Name = strings.Repeat("x", MaxPeerMsgSize+1)
	a.Send(1, big)
	a.Send(1, probe(2))
	if v := recvN(t, b.Inbox(), 1)[0].GetProbe().GetLastCommitted(); v != 2 {
		t.Fatalf("got %d, want 2", v)
	}
	if st := a.Stats(); st.DroppedOversized != 1 || st.Sent != 1 {
		t.Fatalf("sender stats %+v", st)
	}
}

func TestNewTransportNeedsFSID(t *testing.T) {
	if _, err := NewTransport(TransportConfig{Name: "a"}); err == nil {
		t.Fatal("NewTransport accepted an empty fsid")
	}
}
