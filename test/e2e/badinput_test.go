package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
)

// newMuteListener returns the address of a listener that accepts connections and never says
// a word (a hung monitor, from a client's point of view). Closed at cleanup.
func newMuteListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// lastCommitted returns each monitor's last_committed (MonStatus, per monitor) once they all
// agree: a peon learns a commit a moment after the leader acknowledged it.
func (tc *testCluster) lastCommitted() map[string]uint64 {
	tc.t.Helper()
	ctx := tc.ctx()
	for {
		out := map[string]uint64{}
		var lcs []uint64
		for _, p := range tc.Procs {
			s, err := MonStatus(ctx, tc.cl, p, 5*time.Second)
			if err != nil {
				tc.t.Fatalf("mon-status of mon.%s: %v", p.Name, err)
			}
			out[p.Name] = s.GetPaxos().GetLastCommitted()
			lcs = append(lcs, out[p.Name])
		}
		if slices.Min(lcs) == slices.Max(lcs) {
			return out
		}
		if ctx.Err() != nil {
			tc.t.Fatalf("last_committed never converged: %v", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkUnchanged fails the test when any monitor's last_committed moved from before.
func (tc *testCluster) checkUnchanged(what string, before map[string]uint64) {
	tc.t.Helper()
	for name, lc := range tc.lastCommitted() {
		if lc != before[name] {
			tc.t.Errorf("%s changed state: mon.%s last_committed %d -> %d", what, name, before[name], lc)
		}
	}
}

// TestOversizedValue: a config-key value over mon_config_key_max_entry_size (64 KiB) is
// refused (client ErrTooBig, monctl exit 27) and changes nothing; exactly the limit is accepted.
func TestOversizedValue(t *testing.T) {
	tc := newCluster(t, Options{})
	tc.start()
	ctx := tc.ctx()
	if _, err := tc.cl.KVSet(ctx, "big", []byte("small")); err != nil {
		t.Fatal(err)
	}
	before := tc.lastCommitted()

	const limit = 64 << 10
	_, err := tc.cl.KVSet(ctx, "big", make([]byte, limit+1))
	if !errIs(err, client.ErrTooBig) || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("client set of %d bytes: %v (code %v), want ErrTooBig/ResourceExhausted", limit+1, err, status.Code(err))
	}
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, make([]byte, limit+1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := tc.monctl("config-key", "set", "big", "-i", file)
	if code != 27 {
		t.Errorf("monctl config-key set of %d bytes: exit %d, want 27 (stdout %q, stderr %q)", limit+1, code, out, errOut)
	}
	tc.checkUnchanged("an oversized value", before)
	mustGet(t, ctx, tc.cl, "big", "small")

	// The limit itself is allowed: the refusal above is about size, not a broken write path.
	if _, err := tc.cl.KVSet(ctx, "big", make([]byte, limit)); err != nil {
		t.Errorf("set of exactly %d bytes: %v", limit, err)
	}
}

// rawCodec sends and receives bytes as they are, to put garbage on the wire. Named "proto" so
// the server decodes it with its protobuf codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestMalformedRequest: malformed requests get InvalidArgument (or Internal for bytes that are
// not a protobuf message at all), through the client and raw gRPC, and change no state.
func TestMalformedRequest(t *testing.T) {
	tc := newCluster(t, Options{})
	leader := tc.start()
	ctx := tc.ctx()
	if _, err := tc.cl.KVSet(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	before := tc.lastCommitted()

	// Through the client library: empty key.
	if _, err := tc.cl.KVSet(ctx, "", []byte("v")); !errIs(err, client.ErrInvalid) {
		t.Errorf("client KVSet with an empty key: %v, want ErrInvalid", err)
	}
	// Through monctl: exit 22.
	if code, _, errOut := tc.monctl("config-key", "set", "", "v"); code != 22 {
		t.Errorf("monctl config-key set with an empty key: exit %d, want 22 (stderr %q)", code, errOut)
	}

	// Raw gRPC to a peon and to the leader (a peon forwards writes).
	for _, p := range []*Proc{tc.others(leader)[0], leader} {
		conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		mc := minimonv1.NewMonitorClient(conn)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = mc.KVSet(cctx, &minimonv1.KVSetRequest{Key: "", Value: []byte("v"),
			WriteId: &minimonv1.WriteID{ClientId: "e2e", Seq: 1}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("mon.%s raw KVSet with an empty key: %v, want InvalidArgument", p.Name, err)
		}
		_, err = mc.KVSet(cctx, &minimonv1.KVSetRequest{Key: strings.Repeat("k", 1<<20), Value: []byte("v"),
			WriteId: &minimonv1.WriteID{ClientId: "e2e", Seq: 2}})
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
			t.Errorf("mon.%s raw KVSet with a 1 MiB key: %v, want InvalidArgument or ResourceExhausted", p.Name, err)
		}
		// Bytes that do not decode as a KVSetRequest: a truncated varint, then a string
		// field with invalid UTF-8.
		for _, garbage := range [][]byte{{0xff, 0xff, 0xff}, {0x0a, 0x02, 0xc3, 0x28}} {
			var reply []byte
			err = conn.Invoke(cctx, "/minimon.v1.Monitor/KVSet", &garbage, &reply, grpc.ForceCodec(rawCodec{}))
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.Internal {
				t.Errorf("mon.%s garbage KVSet %x: %v, want InvalidArgument or Internal", p.Name, garbage, err)
			}
		}
		cancel()
		_ = conn.Close()
	}
	tc.checkUnchanged("malformed requests", before)
	mustGet(t, ctx, tc.cl, "k", "v")
	for _, p := range tc.Procs {
		if !p.Running() {
			t.Errorf("mon.%s exited after malformed requests: %v", p.Name, p.ExitErr())
		}
	}
}
