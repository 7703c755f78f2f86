package monitor

// Bad and hostile input (issue 5 items 5-6): sync chunks from the network (fuzzed on the
// requester side) and the client API of a running 3-monitor cluster under oversized,
// malformed, unknown and abusive requests.

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// storeDump is every bucket's pairs, for comparing a store before and after.
func storeDump(t testing.TB, st kvstore.Store) map[string]string {
	t.Helper()
	sizes, err := st.Sizes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range slices.Sorted(maps.Keys(sizes)) {
		if err := st.ForEach(b, nil, func(k, v []byte) error {
			out[b+"/"+string(k)] = string(v)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func syncFrames(data []byte) [][]byte {
	var out [][]byte
	for len(data) >= 2 && len(out) < 32 {
		n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
		out = append(out, data[2:2+n])
		data = data[2+n:]
	}
	return out
}

func syncFrame(t testing.TB, c *minimonv1.SyncChunk) []byte {
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// FuzzSyncChunk feeds a requester arbitrary chunks as a provider's stream would deliver them
// (the checks of SyncRequester.stream, then begin and apply). Nothing may panic; a rejected
// chunk leaves the store as it was; a store that took a last chunk has no sync marker and
// readable paxos bounds with first_committed <= last_committed.
func FuzzSyncChunk(f *testing.F) {
	// Seeds: a real provider's stream of a small store.
	src := kvstore.NewMem()
	tx := &minimonv1.Transaction{}
	for v := uint64(1); v <= 4; v++ {
		val, err := proto.Marshal(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{
			Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketKV, Key: fmt.Appendf(nil, "k%d", v), Value: []byte("v")}}})
		if err != nil {
			f.Fatal(err)
		}
		tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: paxos.Bucket, Key: kvstore.U64Key(v), Value: val},
			&minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketKV, Key: fmt.Appendf(nil, "k%d", v), Value: []byte("v")})
	}
	tx.Ops = append(tx.Ops, putPaxosU64(paxos.KeyFirstCommitted, 1), putPaxosU64(paxos.KeyLastCommitted, 4))
	if err := src.Apply(tx); err != nil {
		f.Fatal(err)
	}
	ver := func(v uint64) *minimonv1.SyncVersion {
		b, _ := src.Get(paxos.Bucket, kvstore.U64Key(v))
		return &minimonv1.SyncVersion{Version: v, Value: b}
	}
	exp, err := src.Export(kvstore.BucketKV, nil, 0, 2)
	if err != nil {
		f.Fatal(err)
	}
	good := [][]byte{
		syncFrame(f, &minimonv1.SyncChunk{LastCommitted: 2, Chunk: exp}),
		syncFrame(f, &minimonv1.SyncChunk{LastCommitted: 2, Chunk: &minimonv1.ExportChunk{Done: true}, Versions: []*minimonv1.SyncVersion{ver(3), ver(4)},
			Last: true, EndFirstCommitted: 1, EndLastCommitted: 4}),
	}
	f.Add(slices.Concat(good...))
	f.Add(good[0])
	f.Add(syncFrame(f, &minimonv1.SyncChunk{Last: true, Chunk: &minimonv1.ExportChunk{Done: true}, EndFirstCommitted: 5, EndLastCommitted: 0}))
	f.Add(syncFrame(f, &minimonv1.SyncChunk{Chunk: &minimonv1.ExportChunk{Pairs: []*minimonv1.ExportChunk_Pair{{Bucket: kvstore.BucketMeta, Key: []byte("x")}}}}))
	f.Add(slices.Concat(syncFrame(f, &minimonv1.SyncChunk{}), syncFrame(f, &minimonv1.SyncChunk{
		Versions: []*minimonv1.SyncVersion{{Version: 1, Value: []byte{0xff}}}})))
	f.Add([]byte{0, 3, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := kvstore.NewMem()
		// dst has its own election state and an old committed value (a monitor that fell behind).
		if err := dst.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
			{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketElection, Key: []byte("epoch"), Value: kvstore.U64Key(3)},
			{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketKV, Key: []byte("old"), Value: []byte("x")},
			putPaxosU64(paxos.KeyLastCommitted, 1),
		}}); err != nil {
			t.Fatal(err)
		}
		r := &SyncRequester{}
		s := &syncSession{floor: 1}
		first, streamLC := true, uint64(0)
		for _, fr := range syncFrames(data) {
			c := &minimonv1.SyncChunk{}
			if proto.Unmarshal(fr, c) != nil {
				return // the gRPC stream fails the call
			}
			before := storeDump(t, dst)
			if first {
				if err := r.begin(dst, s, c); err != nil {
					if !maps.Equal(before, storeDump(t, dst)) {
						t.Fatalf("refused first chunk changed the store: %v", err)
					}
					return
				}
				before, streamLC = storeDump(t, dst), c.GetLastCommitted()
				if !SyncInProgress(dst) {
					t.Fatal("no sync marker after the first chunk")
				}
			} else if c.GetLastCommitted() != streamLC {
				return // stream() refuses it before applying
			}
			first = false
			last, err := r.apply(dst, s, c)
			if err != nil {
				if !maps.Equal(before, storeDump(t, dst)) {
					t.Fatalf("refused chunk changed the store: %v", err)
				}
				if !SyncInProgress(dst) {
					t.Fatal("sync marker gone after a refused chunk")
				}
				return
			}
			if last {
				if SyncInProgress(dst) {
					t.Fatal("sync marker still set after the last chunk")
				}
				fc, lc, err := readCommitted(dst)
				if err != nil {
					t.Fatalf("paxos bounds after the last chunk: %v", err)
				}
				if fc > lc || lc < s.floor {
					t.Fatalf("after the last chunk fc=%d lc=%d floor=%d", fc, lc, s.floor)
				}
				if e, _ := dst.Get(kvstore.BucketElection, []byte("epoch")); string(e) != string(kvstore.U64Key(3)) {
					t.Fatal("sync replaced the local election epoch")
				}
				return
			}
		}
	})
}

// invokeRaw calls a Monitor method with the given request bytes and returns the reply bytes.
func invokeRaw(cc *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	var out []byte
	err := cc.Invoke(ctx, method, req, &out, grpc.ForceCodec(rawCodec{}))
	return out, err
}

// lastCommitted is a monitor's last_committed as it reports it.
func lastCommitted(t *testing.T, tm *testMon) uint64 {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetPaxos().GetLastCommitted()
}

func kvExists(t *testing.T, tm *testMon, key string) bool {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	r, err := tm.c.KVExists(ctx, &minimonv1.KVExistsRequest{Key: key})
	if err != nil {
		t.Fatalf("KVExists(%s) on %s: %v", key, tm.cfg.Name, err)
	}
	return r.GetExists()
}

// heapAlloc is the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestHostileClientInput sends a running cluster bad and abusive client requests: each gets a
// clear error or back-pressure, nothing is stored, memory stays bounded and the monitors keep
// serving everyone else.
func TestHostileClientInput(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader, peon := mons[li], mons[(li+1)%3]
	kvSet(t, leader, "sane", "1")

	// unchanged asserts that no monitor's last_committed moved from before and key is absent.
	unchanged := func(t *testing.T, before []uint64, key string) {
		t.Helper()
		for i, tm := range mons {
			if lc := lastCommitted(t, tm); lc != before[i] {
				t.Errorf("%s: last_committed %d -> %d after a refused request", tm.cfg.Name, before[i], lc)
			}
			if kvExists(t, tm, key) {
				t.Errorf("%s: refused key %q was stored", tm.cfg.Name, key)
			}
		}
	}
	// lcs is every monitor's last_committed once they agree (a peon learns a commit after
	// its ack, so right after a write they may differ for a moment).
	lcs := func(t *testing.T) []uint64 {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			var out []uint64
			for _, tm := range mons {
				out = append(out, lastCommitted(t, tm))
			}
			if slices.Min(out) == slices.Max(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("last_committed never agreed: %v", out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("request above the server's message size", func(t *testing.T) {
		before := lcs(t)
		for _, tm := range []*testMon{leader, peon} {
			cc, err := grpc.NewClient(tm.cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := rpcCtx(waitTimeout)
			_, err = minimonv1.NewMonitorClient(cc).KVSet(ctx, &minimonv1.KVSetRequest{Key: "huge", Value: make([]byte, 20<<20)})
			cancel()
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("20 MiB KVSet to %s: %v, want ResourceExhausted", tm.cfg.Name, err)
			}
			t.Logf("20 MiB KVSet to %s: %v", tm.cfg.Name, err)
		}
		// Below the message size but above the entry size: refused by the service, not stored.
		ctx, cancel := rpcCtx(waitTimeout)
		_, err := peon.c.KVSet(ctx, &minimonv1.KVSetRequest{Key: "huge", Value: make([]byte, 1<<20)})
		cancel()
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("1 MiB KVSet: %v, want ResourceExhausted (entry size)", err)
		}
		unchanged(t, before, "huge")
	})

	t.Run("undecodable requests", func(t *testing.T) {
		before := lcs(t)
		key := protowire.AppendTag(nil, 1, protowire.BytesType)
		for _, tc := range []struct {
			name string
			req  []byte
		}{
			{"garbage", []byte{0xff, 0xff, 0xff, 0xff}},
			{"truncated length", append(slices.Clone(key), 0x7f, 'x')},
			{"key as varint", protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5)},
			{"invalid UTF-8 key", protowire.AppendString(slices.Clone(key), "bad\xff")},
			{"field number 0", []byte{0x00, 0x01}},
			{"group end without start", protowire.AppendTag(nil, 7, protowire.EndGroupType)},
		} {
			for _, method := range []string{minimonv1.Monitor_KVSet_FullMethodName, minimonv1.Monitor_KVGet_FullMethodName} {
				_, err := invokeRaw(peon.cc, method, tc.req)
				if c := status.Code(err); c != codes.Internal && c != codes.InvalidArgument {
					t.Errorf("%s to %s: %v, want Internal or InvalidArgument", tc.name, method, err)
				}
			}
		}
		// A watch stream with an undecodable request ends with the same kind of error.
		ctx, cancel := rpcCtx(waitTimeout)
		defer cancel()
		s, err := peon.cc.NewStream(ctx, &minimonv1.Monitor_ServiceDesc.Streams[0], minimonv1.Monitor_Watch_FullMethodName,
			grpc.ForceCodec(rawCodec{}))
		if err == nil {
			err = s.SendMsg([]byte{0xff, 0xff})
		}
		if err == nil {
			err = s.CloseSend()
		}
		if err == nil {
			var b []byte
			err = s.RecvMsg(&b)
		}
		if c := status.Code(err); c != codes.Internal && c != codes.InvalidArgument {
			t.Errorf("undecodable Watch: %v, want Internal or InvalidArgument", err)
		}
		unchanged(t, before, "bad")
		if got := kvGet(t, peon, "sane"); got != "1" {
			t.Fatalf("after malformed requests KVGet(sane) = %q", got)
		}
	})

	t.Run("unknown fields and targets", func(t *testing.T) {
		// Unknown field numbers of every wire type are skipped: the request is served as if
		// they were absent.
		req, err := proto.Marshal(&minimonv1.KVSetRequest{Key: "unknown-fields", Value: []byte("ok")})
		if err != nil {
			t.Fatal(err)
		}
		req = protowire.AppendVarint(protowire.AppendTag(req, 99, protowire.VarintType), 1<<40)
		req = protowire.AppendBytes(protowire.AppendTag(req, 1000, protowire.BytesType), make([]byte, 1000))
		req = protowire.AppendFixed64(protowire.AppendTag(req, 536870911, protowire.Fixed64Type), 7)
		req = protowire.AppendFixed32(protowire.AppendTag(req, 12345, protowire.Fixed32Type), 7)
		if _, err := invokeRaw(peon.cc, minimonv1.Monitor_KVSet_FullMethodName, req); err != nil {
			t.Fatalf("KVSet with unknown fields: %v", err)
		}
		if got := kvGet(t, leader, "unknown-fields"); got != "ok" {
			t.Fatalf("KVGet(unknown-fields) = %q, want ok", got)
		}
		// The unknown fields are not stored with the value (the stored value is the field).
		ctx, cancel := rpcCtx(waitTimeout)
		r, err := leader.c.KVGet(ctx, &minimonv1.KVGetRequest{Key: "unknown-fields"})
		cancel()
		if err != nil || len(r.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("KVGet reply %v %v carries unknown fields", r, err)
		}

		// A limit above the server's maximum is the maximum.
		lreq := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1<<32-1)
		if _, err := invokeRaw(peon.cc, minimonv1.Monitor_KVList_FullMethodName, lreq); err != nil {
			t.Fatalf("KVList with limit 2^32-1: %v", err)
		}

		// Watch targets the server does not know (and a target as an unknown field).
		before := lcs(t)
		for _, tc := range []struct {
			name string
			req  []byte
		}{
			{"unknown target", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "osdmap")},
			{"target with NUL", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "kv\x00")},
			{"long target", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), strings.Repeat("k", 1<<20))},
			{"kv prefix too long", protowire.AppendString(protowire.AppendTag(
				protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "kv"), 3, protowire.BytesType), strings.Repeat("p", 1<<16))},
			{"config without who", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "config")},
			{"config with a bad who", protowire.AppendString(protowire.AppendTag(
				protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "config"), 2, protowire.BytesType), "osd./host:")},
			{"only unknown fields", protowire.AppendVarint(protowire.AppendTag(nil, 77, protowire.VarintType), 3)},
		} {
			ctx, cancel := rpcCtx(waitTimeout)
			s, err := peon.cc.NewStream(ctx, &minimonv1.Monitor_ServiceDesc.Streams[0], minimonv1.Monitor_Watch_FullMethodName,
				grpc.ForceCodec(rawCodec{}))
			if err == nil {
				err = s.SendMsg(tc.req)
			}
			if err == nil {
				err = s.CloseSend()
			}
			if err == nil {
				var b []byte
				err = s.RecvMsg(&b)
			}
			cancel()
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("Watch %s: %v, want InvalidArgument", tc.name, err)
			}
		}
		unchanged(t, before, "osdmap")
	})

	t.Run("many small connections reading at once", func(t *testing.T) {
		const conns = 200
		var wg sync.WaitGroup
		var mu sync.Mutex
		codesSeen := map[codes.Code]int{}
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tm := mons[i%3]
				cc, err := grpc.NewClient(tm.cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Error(err)
					return
				}
				defer cc.Close()
				c := minimonv1.NewMonitorClient(cc)
				ctx, cancel := rpcCtx(waitTimeout)
				defer cancel()
				_, err = c.KVGet(ctx, &minimonv1.KVGetRequest{Key: "sane"})
				if err == nil {
					_, err = c.KVList(ctx, &minimonv1.KVListRequest{})
				}
				if err == nil {
					_, err = c.Status(ctx, &minimonv1.StatusRequest{})
				}
				mu.Lock()
				codesSeen[status.Code(err)]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("%d connections (KVGet, KVList, Status each): results by code %v", conns, codesSeen)
		for c, n := range codesSeen {
			// Served, or told to go elsewhere / come back: never an unexplained failure.
			if c != codes.OK && c != codes.Unavailable && c != codes.ResourceExhausted {
				t.Errorf("%d connections ended with %v", n, c)
			}
		}
		if codesSeen[codes.OK] < conns/2 {
			t.Errorf("only %d of %d connections were served", codesSeen[codes.OK], conns)
		}
	})

	t.Run("list over more keys than the server returns", func(t *testing.T) {
		// Writes go through Paxos; concurrent clients share rounds (one value per batch).
		const keys, writers = services.DefaultMaxListKeys + 500, 256
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < keys; i += writers {
					// A loaded machine may cost the leader its lease: a set of the same value
					// is safe to repeat when the outcome is unknown.
					var err error
					for try := 0; try == 0 || (status.Code(err) == codes.Unavailable && try < 20); try++ {
						ctx, cancel := rpcCtx(waitTimeout)
						_, err = mons[w%3].c.KVSet(ctx, &minimonv1.KVSetRequest{Key: fmt.Sprintf("many/%06d", i), Value: []byte("v")})
						cancel()
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("writing %d keys: %v", keys, err)
		}
		t.Logf("wrote %d keys with %d concurrent clients in %v", keys, writers, time.Since(start).Round(time.Millisecond))
		for _, limit := range []uint32{0, services.DefaultMaxListKeys + 1, 1<<32 - 1} {
			ctx, cancel := rpcCtx(waitTimeout)
			r, err := leader.c.KVList(ctx, &minimonv1.KVListRequest{Prefix: "many/", Limit: limit})
			cancel()
			if err != nil {
				t.Fatalf("KVList(limit %d): %v", limit, err)
			}
			if len(r.GetKeys()) != services.DefaultMaxListKeys || !r.GetTruncated() {
				t.Fatalf("KVList(limit %d) = %d keys, truncated %v; want %d, true", limit, len(r.GetKeys()), r.GetTruncated(), services.DefaultMaxListKeys)
			}
			if !slices.IsSorted(r.GetKeys()) || r.GetKeys()[0] != "many/000000" {
				t.Fatalf("KVList(limit %d) not in key order from the first key", limit)
			}
		}
		ctx, cancel := rpcCtx(waitTimeout)
		r, err := peon.c.KVList(ctx, &minimonv1.KVListRequest{Prefix: "many/", Limit: 10})
		cancel()
		if err != nil || len(r.GetKeys()) != 10 || !r.GetTruncated() {
			t.Fatalf("KVList(limit 10) = %v, %v", r, err)
		}
	})

	t.Run("watches that never read", func(t *testing.T) {
		// Clients with small fixed flow-control windows (no BDP growth) so the monitor's sends
		// block soon and what is measured is the monitor's own buffering.
		perConn, nconn, limit := 300, 4, maxWatches // 1200 streams > maxWatches
		if raceEnabled {
			// Under -race a loop feeding 1024 watches misses its lease renewals here; the
			// limit and the cut-off are the same code with a lower limit.
			perConn, limit = 80, 256
			onLoopT(t, leader, func() { leader.m.l.watch.limit = limit })
			defer onLoopT(t, leader, func() { leader.m.l.watch.limit = 0 })
		}
		heap0 := heapAlloc()
		var ccs []*grpc.ClientConn
		for range nconn {
			cc, err := grpc.NewClient(leader.cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ccs = append(ccs, cc)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
		defer cancel()
		var streams []grpc.ServerStreamingClient[minimonv1.WatchEvent]
		refused := 0
		for i := range nconn * perConn {
			s, err := minimonv1.NewMonitorClient(ccs[i%nconn]).Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "flood/"})
			if err == nil {
				_, err = s.Recv() // the snapshot: attached (or refused)
			}
			switch status.Code(err) {
			case codes.OK:
				streams = append(streams, s)
			case codes.ResourceExhausted:
				refused++
			default:
				t.Fatalf("watch %d: %v", i, err)
			}
		}
		if len(streams) != limit || refused != nconn*perConn-limit {
			t.Fatalf("%d watches attached, %d refused; want %d and %d", len(streams), refused, limit, nconn*perConn-limit)
		}
		if n := watchers(t, leader); n != limit {
			t.Fatalf("leader serves %d watches, want %d", n, limit)
		}
		// Other clients are served while the watchers hold the limit; write big values until
		// every silent watcher is cut off.
		val := strings.Repeat("w", 60<<10)
		var peak uint64
		writes := 0
		for ; writes < 200 && watchers(t, leader) > 0; writes++ {
			kvSet(t, peon, fmt.Sprintf("flood/%03d", writes), val)
			if writes%10 == 0 {
				peak = max(peak, heapAlloc())
				if got := kvGet(t, leader, "sane"); got != "1" {
					t.Fatalf("KVGet(sane) during the flood = %q", got)
				}
			}
		}
		peak = max(peak, heapAlloc())
		growth := int64(peak) - int64(heap0)
		t.Logf("%d silent watches, %d refused; all cut off after %d writes of 60 KiB; heap %d MiB -> peak %d MiB (growth %d MiB)",
			len(streams), refused, writes, heap0>>20, peak>>20, growth>>20)
		if n := watchers(t, leader); n != 0 {
			t.Fatalf("%d silent watches still attached after %d writes", n, writes)
		}
		// What a silent stream may hold: gRPC's per-stream write quota (64 KiB) plus the event
		// that overdrew it and the one blocked in Send, on the monitor's side; the client's
		// 64 KiB window on this test's side (both live in this process). Before codec.go each
		// 60 KiB event sat in a 1 MiB pool buffer: over 3 GiB here.
		if bound := int64(limit)*5*(64<<10) + 64<<20; growth > bound {
			t.Fatalf("heap grew by %d MiB with %d silent watches (bound %d MiB)", growth>>20, len(streams), bound>>20)
		}
		// Each silent stream gets what was in flight, then Aborted "fell behind".
		got := map[int]int{}
		for i, s := range streams {
			var err error
			n := 0
			for err == nil {
				_, err = s.Recv()
				n++
			}
			got[n]++
			if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "fell behind") {
				t.Fatalf("silent watch %d ended with %v, want Aborted (fell behind)", i, err)
			}
		}
		t.Logf("events received per silent stream before its end: %v", got)
		// The limit is free again: a new watch is served.
		s, err := leader.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "sane"})
		if err != nil {
			t.Fatal(err)
		}
		if ev := recvOne(t, s); !ev.GetSnapshot() || len(ev.GetKv()) != 1 {
			t.Fatalf("watch after the flood: %s", kvEvent(ev))
		}
	})
}
