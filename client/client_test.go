package client

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client/clienttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadAddr is an address nothing listens on (connection refused).
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func newClient(t *testing.T, eps ...string) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: eps, DialTimeout: time.Second, BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.next = 0 // deterministic hunting order for the test
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func count(s *clienttest.Server, method string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == method {
			n++
		}
	}
	return n
}

func unavailable(string, proto.Message) error {
	return status.Error(codes.Unavailable, "no quorum")
}

func TestHuntSkipsDeadAndUnavailableMonitors(t *testing.T) {
	noQuorum := clienttest.New()
	noQuorum.Intercept = unavailable
	good := clienttest.New()
	c := newClient(t, deadAddr(t), noQuorum.Start(t), good.Start(t))

	r, err := c.Status(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if r.GetLeader() != "a" {
		t.Fatalf("leader %q", r.GetLeader())
	}
	if count(noQuorum, "Status") != 1 || count(good, "Status") != 1 {
		t.Fatalf("calls: noquorum %d good %d, want 1 and 1", count(noQuorum, "Status"), count(good, "Status"))
	}
	// The next call starts at the monitor that answered.
	if _, err := c.Status(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if count(noQuorum, "Status") != 1 || count(good, "Status") != 2 {
		t.Fatalf("second call did not go straight to the good monitor: noquorum %d good %d", count(noQuorum, "Status"), count(good, "Status"))
	}
}

func TestWriteRetryKeepsWriteID(t *testing.T) {
	for _, code := range []codes.Code{codes.Unavailable, codes.DeadlineExceeded} {
		t.Run(code.String(), func(t *testing.T) {
			s := clienttest.New()
			var n atomic.Int32
			s.Intercept = func(method string, _ proto.Message) error {
				if method == "KVSet" && n.Add(1) <= 2 {
					return status.Error(code, "outcome unknown")
				}
				return nil
			}
			c := newClient(t, s.Start(t))
			if _, err := c.KVSet(ctxT(t, 10*time.Second), "k", []byte("v")); err != nil {
				t.Fatalf("KVSet: %v", err)
			}
			calls := s.Calls()
			if len(calls) != 3 {
				t.Fatalf("%d calls, want 3", len(calls))
			}
			for _, cl := range calls {
				if !proto.Equal(cl.WriteID, calls[0].WriteID) || cl.WriteID.GetClientId() != c.ClientID() {
					t.Fatalf("write ids differ: %v vs %v", cl.WriteID, calls[0].WriteID)
				}
			}
			if s.Applied() != 1 {
				t.Fatalf("applied %d", s.Applied())
			}
			// The next write gets the next seq.
			if _, err := c.KVSet(ctxT(t, 10*time.Second), "k", []byte("w")); err != nil {
				t.Fatal(err)
			}
			calls = s.Calls()
			if got := calls[len(calls)-1].WriteID.GetSeq(); got != calls[0].WriteID.GetSeq()+1 {
				t.Fatalf("next seq %d after %d", got, calls[0].WriteID.GetSeq())
			}
		})
	}
}

func TestFinalErrorsAreNotRetried(t *testing.T) {
	s := clienttest.New()
	s.MaxValueSize = 4
	other := clienttest.New() // a second monitor must not be tried either
	c := newClient(t, s.Start(t), other.Start(t))
	ctx := ctxT(t, 10*time.Second)

	cases := []struct {
		name   string
		method string
		call   func() error
		want   error
	}{
		{"too big", "KVSet", func() error { _, err := c.KVSet(ctx, "k", []byte("12345")); return err }, ErrTooBig},
		{"invalid", "KVSet", func() error { _, err := c.KVSet(ctx, "", []byte("1")); return err }, ErrInvalid},
		{"not found", "KVGet", func() error { _, err := c.KVGet(ctx, "missing"); return err }, ErrNotFound},
		{"exists", "MonAdd", func() error { _, err := c.MonAdd(ctx, "a", "10.0.0.9:6789"); return err }, ErrExists},
	}
	for _, tc := range cases {
		before := count(s, tc.method)
		err := tc.call()
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		if got := count(s, tc.method) - before; got != 1 {
			t.Fatalf("%s: %d calls, want 1", tc.name, got)
		}
		if status.Code(err) == codes.OK || status.Code(err) == codes.Unknown {
			t.Fatalf("%s: status code lost: %v", tc.name, status.Code(err))
		}
	}
	if n := len(other.Calls()); n != 0 {
		t.Fatalf("second monitor got %d calls", n)
	}
	if s.Applied() != 0 {
		t.Fatalf("applied %d", s.Applied())
	}
}

func TestTimeoutWhenNothingAnswers(t *testing.T) {
	c := newClient(t, deadAddr(t))
	_, err := c.Status(ctxT(t, 300*time.Millisecond))
	if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrNoQuorum) {
		t.Fatalf("unreachable: err %v", err)
	}

	s := clienttest.New()
	s.Intercept = unavailable
	c2 := newClient(t, s.Start(t))
	// Long enough that at least one attempt gets its Unavailable answer on a loaded machine
	// (with 300 ms the first dial alone sometimes used the whole deadline).
	_, err = c2.KVSet(ctxT(t, 2*time.Second), "k", []byte("v"))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("no quorum: err %v", err)
	}
	if n := count(s, "KVSet"); n < 2 {
		t.Fatalf("no quorum: %d attempts, want retries", n)
	}
}

func TestMonStatusGoesToOneEndpoint(t *testing.T) {
	other := clienttest.New()
	target := clienttest.New()
	target.Intercept = func(string, proto.Message) error { return nil }
	c := newClient(t, other.Start(t))
	taddr := target.Start(t)
	if _, err := c.MonStatus(ctxT(t, 10*time.Second), taddr); err != nil {
		t.Fatal(err)
	}
	if count(target, "MonStatus") != 1 || len(other.Calls()) != 0 {
		t.Fatalf("target %d other %d", count(target, "MonStatus"), len(other.Calls()))
	}
	_, err := c.MonStatus(ctxT(t, 200*time.Millisecond), deadAddr(t))
	if !errors.Is(err, ErrTimeout) || len(other.Calls()) != 0 {
		t.Fatalf("dead endpoint: err %v, other got %d calls", err, len(other.Calls()))
	}
}

func TestClosed(t *testing.T) {
	c := newClient(t, clienttest.New().Start(t))
	c.Close()
	if _, err := c.Status(ctxT(t, time.Second)); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v", err)
	}
}

type watchStream = grpc.ServerStreamingServer[minimonv1.WatchEvent]

func sendVersions(st watchStream, vs ...uint64) error {
	for _, v := range vs {
		if err := st.Send(&minimonv1.WatchEvent{Version: v, Snapshot: v == 1, Kv: []*minimonv1.KVChange{{Key: "k", Value: []byte{byte(v)}}}}); err != nil {
			return err
		}
	}
	return nil
}

func TestWatchReattachResumesWithoutRepeats(t *testing.T) {
	var fromSeen []uint64
	fromCh := make(chan uint64, 10)
	a := clienttest.New()
	a.WatchFunc = func(req *minimonv1.WatchRequest, st watchStream) error {
		fromCh <- req.FromVersion
		if err := sendVersions(st, 1, 2, 3); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "leaving quorum") // the stream breaks
	}
	b := clienttest.New()
	b.WatchFunc = func(req *minimonv1.WatchRequest, st watchStream) error {
		fromCh <- req.FromVersion
		// A server resuming a little early: versions 2 and 3 must be dropped.
		if err := sendVersions(st, 2, 3, 4); err != nil {
			return err
		}
		return nil // ends the stream (EOF): the client reattaches to a
	}
	c := newClient(t, a.Start(t), b.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint64
	for ev, err := range c.Watch(ctx, &minimonv1.WatchRequest{Target: "kv", Prefix: "k"}) {
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		got = append(got, ev.GetVersion())
		if len(got) == 4 {
			break
		}
	}
	// a (from 0): 1,2,3; b (from 3): 4; a again (from 4): repeats only, so we stopped at 4.
	want := []uint64{1, 2, 3, 4}
	if len(got) != len(want) {
		t.Fatalf("versions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("versions %v, want %v", got, want)
		}
	}
	fromSeen = append(fromSeen, <-fromCh, <-fromCh)
	if fromSeen[0] != 0 || fromSeen[1] != 3 {
		t.Fatalf("from_version sent %v, want [0 3]", fromSeen)
	}
}

func TestWatchFinalErrorAndCancel(t *testing.T) {
	s := clienttest.New()
	s.WatchFunc = func(*minimonv1.WatchRequest, watchStream) error {
		return status.Error(codes.InvalidArgument, "bad target")
	}
	c := newClient(t, s.Start(t))
	var errs []error
	for ev, err := range c.Watch(ctxT(t, 10*time.Second), &minimonv1.WatchRequest{Target: "nope"}) {
		if ev != nil {
			t.Fatalf("event %v", ev)
		}
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrInvalid) || count(s, "Watch") != 1 {
		t.Fatalf("errs %v, watch calls %d", errs, count(s, "Watch"))
	}

	// The built-in watch of the fake: snapshot then a change; cancel ends the sequence.
	s2 := clienttest.New()
	s2.SetKV("kx", []byte("1"))
	c2 := newClient(t, s2.Start(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	for ev, err := range c2.Watch(ctx, &minimonv1.WatchRequest{Target: "kv", Prefix: "k"}) {
		if err != nil {
			if !errors.Is(err, context.Canceled) || n != 2 {
				t.Fatalf("err %v after %d events", err, n)
			}
			break
		}
		n++
		switch n {
		case 1:
			if !ev.Snapshot || len(ev.Kv) != 1 {
				t.Fatalf("snapshot %v", ev)
			}
			if _, err := c2.KVSet(ctx, "ky", []byte("2")); err != nil {
				t.Fatal(err)
			}
		case 2:
			if ev.Snapshot || ev.Kv[0].Key != "ky" {
				t.Fatalf("change %v", ev)
			}
			cancel()
		}
	}
}
