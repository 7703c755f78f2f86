package monitor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// testPeer serves Sync and Forward for tests, records what it sends and can break a stream.
type testPeer struct {
	minimonv1.UnimplementedPeerServer
	prov *SyncProvider
	fwd  *ForwardService

	mu       sync.Mutex
	calls    int
	requests []*minimonv1.SyncRequest
	chunks   []*minimonv1.SyncChunk
	// failAt, if set, is asked before each Send of the first call: true breaks the stream.
	failAt func(c *minimonv1.SyncChunk, sent int) bool
}

type recordingStream struct {
	grpc.ServerStreamingServer[minimonv1.SyncChunk]
	p     *testPeer
	first bool
	sent  int
}

func (s *recordingStream) Send(c *minimonv1.SyncChunk) error {
	if s.first && s.p.failAt != nil && s.p.failAt(c, s.sent) {
		return status.Error(codes.Unavailable, "test: stream broken")
	}
	s.sent++
	s.p.mu.Lock()
	s.p.chunks = append(s.p.chunks, proto.Clone(c).(*minimonv1.SyncChunk))
	s.p.mu.Unlock()
	return s.ServerStreamingServer.Send(c)
}

func (p *testPeer) Sync(req *minimonv1.SyncRequest, stream grpc.ServerStreamingServer[minimonv1.SyncChunk]) error {
	p.mu.Lock()
	p.calls++
	first := p.calls == 1
	p.requests = append(p.requests, proto.Clone(req).(*minimonv1.SyncRequest))
	p.mu.Unlock()
	return p.prov.Sync(req, &recordingStream{ServerStreamingServer: stream, p: p, first: first})
}

func (p *testPeer) Forward(ctx context.Context, req *minimonv1.ForwardRequest) (*minimonv1.ForwardReply, error) {
	return p.fwd.Forward(ctx, req)
}

// startTestPeer serves p on a free loopback port and returns a client for it.
func startTestPeer(t *testing.T, p *testPeer) minimonv1.PeerClient {
	t.Helper()
	lis := listen(t)
	s := grpc.NewServer()
	minimonv1.RegisterPeerServer(s, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
		<-done
	})
	return minimonv1.NewPeerClient(conn)
}

func openDB(t *testing.T, name string) *kvstore.DB {
	t.Helper()
	db, err := kvstore.Open(filepath.Join(t.TempDir(), name), kvstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func put(b string, k, v []byte) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: b, Key: k, Value: v}
}

func mustApply(t *testing.T, st kvstore.Store, ops ...*minimonv1.StoreOp) {
	t.Helper()
	if err := st.Apply(&minimonv1.Transaction{Ops: ops}); err != nil {
		t.Fatal(err)
	}
}

// dump returns every pair of st as bucket -> key -> value.
func dump(t *testing.T, st kvstore.Store) map[string]map[string]string {
	t.Helper()
	sizes, err := st.Sizes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for b := range sizes {
		m := map[string]string{}
		if err := st.ForEach(b, nil, func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		out[b] = m
	}
	return out
}

// diffDumps describes the first differences of a against b (empty when equal).
func diffDumps(a, b map[string]map[string]string) string {
	var d []string
	for _, bk := range slices.Sorted(maps.Keys(a)) {
		for k, v := range a[bk] {
			if w, ok := b[bk][k]; !ok || w != v {
				d = append(d, fmt.Sprintf("%s/%x: got %d bytes, want present=%v", bk, k, len(v), ok))
			}
		}
	}
	for _, bk := range slices.Sorted(maps.Keys(b)) {
		for k := range b[bk] {
			if _, ok := a[bk][k]; !ok {
				d = append(d, fmt.Sprintf("%s/%x: missing", bk, k))
			}
		}
	}
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... %d differences", len(d)))
	}
	return strings.Join(d, "; ")
}

// without returns d without the named buckets.
func without(d map[string]map[string]string, buckets ...string) map[string]map[string]string {
	out := maps.Clone(d)
	for _, b := range buckets {
		delete(out, b)
	}
	return out
}

// fillProvider builds a store with many small keys in several buckets, as commits 1..lc left it.
func fillProvider(t *testing.T, st kvstore.Store, rng *rand.Rand) {
	t.Helper()
	var ops []*minimonv1.StoreOp
	for _, bn := range []struct {
		b string
		n int
	}{{kvstore.BucketKV, 1500}, {kvstore.BucketConfig, 400}, {kvstore.BucketMonmap, 60}, {"svcdata", 200}} {
		for j := range bn.n {
			v := make([]byte, 1+rng.IntN(120))
			for x := range v {
				v[x] = byte(rng.Uint32())
			}
			ops = append(ops, put(bn.b, fmt.Appendf(nil, "key-%05d", j), v))
		}
	}
	for v := uint64(1); v <= 40; v++ {
		ops = append(ops, put(paxos.Bucket, kvstore.U64Key(v), fmt.Appendf(nil, "value %d", v)))
	}
	ops = append(ops,
		put(paxos.Bucket, []byte(paxos.KeyFirstCommitted), kvstore.U64Key(1)),
		put(paxos.Bucket, []byte(paxos.KeyLastCommitted), kvstore.U64Key(40)),
		put(paxos.Bucket, []byte(paxos.KeyAcceptedPN), kvstore.U64Key(301)),
		put(paxos.Bucket, []byte(paxos.KeyLastPN), kvstore.U64Key(301)),
		put(kvstore.BucketElection, []byte("epoch"), kvstore.U64Key(9)),
		put(kvstore.BucketMeta, []byte(kvstore.KeyFSID), []byte(testFSID)),
		put(kvstore.BucketMeta, []byte(kvstore.KeyName), []byte("a")))
	mustApply(t, st, ops...)
}

// fillRequester gives the requester an identity, an epoch and stale data the sync must drop.
func fillRequester(t *testing.T, st kvstore.Store, lc uint64) {
	t.Helper()
	mustApply(t, st,
		put(kvstore.BucketMeta, []byte(kvstore.KeyFSID), []byte(testFSID)),
		put(kvstore.BucketMeta, []byte(kvstore.KeyName), []byte("b")),
		put(kvstore.BucketElection, []byte("epoch"), kvstore.U64Key(11)),
		put(kvstore.BucketKV, []byte("stale-only-here"), []byte("x")),
		put("oldbucket", []byte("k"), []byte("v")),
		put(paxos.Bucket, []byte(paxos.KeyLastCommitted), kvstore.U64Key(lc)),
		put(paxos.Bucket, []byte(paxos.KeyPendingV), kvstore.U64Key(lc+1)))
}

// checkSynced asserts dst equals src except for the local buckets, which keep dst's own.
func checkSynced(t *testing.T, src, dst kvstore.Store, dstBefore map[string]map[string]string) {
	t.Helper()
	got, want := dump(t, dst), dump(t, src)
	if d := diffDumps(without(got, syncLocalBuckets...), without(want, syncLocalBuckets...)); d != "" {
		t.Fatalf("synced store differs from the provider's: %s", d)
	}
	wantMeta := maps.Clone(dstBefore[kvstore.BucketMeta])
	delete(wantMeta, kvstore.KeySyncInProgress)
	if !maps.Equal(got[kvstore.BucketMeta], wantMeta) || !maps.Equal(got[kvstore.BucketElection], dstBefore[kvstore.BucketElection]) {
		t.Fatalf("local buckets changed: meta %v election %v", got[kvstore.BucketMeta], got[kvstore.BucketElection])
	}
	if SyncInProgress(dst) {
		t.Fatal("marker still set after a finished sync")
	}
}

func TestSyncFullCopyRespectsBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	src, dst := openDB(t, "a.db"), openDB(t, "b.db")
	fillProvider(t, src, rng)
	fillRequester(t, dst, 3)
	before := dump(t, dst)
	p := &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src, MaxKeys: 5000}}
	client := startTestPeer(t, p)

	const maxBytes, maxKeys = 4096, 100
	r := &SyncRequester{FSID: testFSID, Name: "b", MaxBytes: maxBytes, MaxKeys: maxKeys}
	res, err := r.Run(context.Background(), client, dst)
	if err != nil {
		t.Fatal(err)
	}
	if res.LastCommitted != 40 || res.FirstCommitted != 1 || res.Attempts != 1 {
		t.Fatalf("result %+v, want fc 1 lc 40 in one attempt", res)
	}
	if len(p.chunks) < 2200/maxKeys {
		t.Fatalf("only %d chunks for about 2200 keys at %d keys a chunk", len(p.chunks), maxKeys)
	}
	for i, c := range p.chunks {
		n, size := 0, 0
		for _, pr := range c.GetChunk().GetPairs() {
			n++
			size += kvstore.PairSize(pr.GetBucket(), pr.GetKey(), pr.GetValue())
			if slices.Contains(syncLocalBuckets, pr.GetBucket()) {
				t.Fatalf("chunk %d carries local bucket %q", i, pr.GetBucket())
			}
		}
		if n > maxKeys || size > maxBytes {
			t.Fatalf("chunk %d has %d keys, %d bytes; bounds %d, %d", i, n, size, maxKeys, maxBytes)
		}
		if c.GetLastCommitted() != 40 {
			t.Fatalf("chunk %d carries last_committed %d, want 40 in every chunk", i, c.GetLastCommitted())
		}
	}
	checkSynced(t, src, dst, before)
	if v, _ := dst.Get(kvstore.BucketKV, []byte("stale-only-here")); v != nil {
		t.Fatal("stale key survived the sync")
	}
}

func TestSyncProviderCapsRequestedBounds(t *testing.T) {
	src, dst := kvstore.NewMem(), kvstore.NewMem()
	fillProvider(t, src, rand.New(rand.NewPCG(3, 4)))
	p := &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src, MaxKeys: 50, MaxBytes: 2000}}
	client := startTestPeer(t, p)
	r := &SyncRequester{FSID: testFSID, Name: "b", MaxBytes: 1 << 30, MaxKeys: 1 << 30}
	if _, err := r.Run(context.Background(), client, dst); err != nil {
		t.Fatal(err)
	}
	for i, c := range p.chunks {
		if n := len(c.GetChunk().GetPairs()); n > 50 {
			t.Fatalf("chunk %d has %d keys, provider cap is 50", i, n)
		}
	}
}

// committer models a provider whose Paxos commits while it serves a sync: before every Export
// it commits one more version (the way commitVersion writes it), and it keeps an accepted but
// uncommitted value at lc+1. It records the replicated state at every version.
type committer struct {
	kvstore.Store
	t       *testing.T
	rng     *rand.Rand
	fc, lc  uint64
	states  map[uint64]map[string]map[string]string
	trimMin uint64

	mu     sync.Mutex // the provider's handler commits; the test reads states after Run
	paused bool
}

func (c *committer) Export(bucket string, key []byte, maxBytes, maxKeys int) (*minimonv1.ExportChunk, error) {
	c.mu.Lock()
	if !c.paused {
		c.commit()
	}
	c.mu.Unlock()
	return c.Store.Export(bucket, key, maxBytes, maxKeys)
}

func (c *committer) randKey() (string, []byte) {
	b := []string{kvstore.BucketKV, kvstore.BucketConfig, kvstore.BucketMonmap, "svcdata"}[c.rng.IntN(4)]
	return b, fmt.Appendf(nil, "key-%05d", c.rng.IntN(1500))
}

func (c *committer) commit() {
	v := c.lc + 1
	tx := &minimonv1.Transaction{}
	for range 1 + c.rng.IntN(12) {
		b, k := c.randKey()
		switch c.rng.IntN(10) {
		case 0:
			tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE, Bucket: b, Key: k})
		case 1:
			tx.Ops = append(tx.Ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: b, Key: k,
				End: append(slices.Clone(k), 'z')})
		default:
			tx.Ops = append(tx.Ops, put(b, k, fmt.Appendf(nil, "v%d-%d", v, c.rng.Uint32())))
		}
	}
	if c.lc > c.fc+c.trimMin+10 { // trim like paxos does: a value's own ops
		end := c.lc - c.trimMin
		tx.Ops = append(tx.Ops,
			&minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: paxos.Bucket, Key: kvstore.U64Key(c.fc), End: kvstore.U64Key(end)},
			put(paxos.Bucket, []byte(paxos.KeyFirstCommitted), kvstore.U64Key(end)))
		c.fc = end
	}
	val, err := proto.Marshal(tx)
	if err != nil {
		c.t.Error(err)
		return
	}
	ops := []*minimonv1.StoreOp{put(paxos.Bucket, kvstore.U64Key(v), val)}
	if c.fc == 0 {
		c.fc = v
		ops = append(ops, put(paxos.Bucket, []byte(paxos.KeyFirstCommitted), kvstore.U64Key(v)))
	}
	ops = append(ops, tx.Ops...)
	ops = append(ops, put(paxos.Bucket, []byte(paxos.KeyLastCommitted), kvstore.U64Key(v)))
	if err := c.Store.Apply(&minimonv1.Transaction{Ops: ops}); err != nil {
		c.t.Error(err)
		return
	}
	c.lc = v
	c.states[v] = dump(c.t, c.Store)
	// The leader's accept of the next value, which may never commit: acceptor state only.
	err = c.Store.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		put(paxos.Bucket, kvstore.U64Key(v+1), fmt.Appendf(nil, "garbage accept %d", v+1)),
		put(paxos.Bucket, []byte(paxos.KeyPendingV), kvstore.U64Key(v+1)),
		put(paxos.Bucket, []byte(paxos.KeyPendingPN), kvstore.U64Key(401)),
	}})
	if err != nil {
		c.t.Error(err)
	}
}

func newCommitter(t *testing.T, seed uint64) *committer {
	c := &committer{Store: kvstore.NewMem(), t: t, rng: rand.New(rand.NewPCG(seed, 7)),
		states: map[uint64]map[string]map[string]string{}, trimMin: 200}
	mustApply(t, c.Store, put(kvstore.BucketMeta, []byte(kvstore.KeyName), []byte("a")),
		put(kvstore.BucketElection, []byte("epoch"), kvstore.U64Key(5)))
	for range 600 {
		c.commit()
	}
	return c
}

// TestSyncWhileProviderCommits is the consistency argument of sync.go under test: the provider
// commits a version before every Export, so the copy is fuzzy; after the replay the requester
// must hold exactly the provider's replicated state at the lc it reports. Also with the stream
// broken in the copy phase and in the catch-up phase.
func TestSyncWhileProviderCommits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failAt func(c *minimonv1.SyncChunk, sent int) bool
	}{
		{"unbroken", nil},
		{"break-in-copy", func(c *minimonv1.SyncChunk, sent int) bool { return sent == 7 }},
		{"break-in-catch-up", func(c *minimonv1.SyncChunk, sent int) bool {
			return len(c.GetVersions()) > 0 && c.GetVersions()[0].GetVersion() > c.GetLastCommitted()+5
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newCommitter(t, 11)
			dst := kvstore.NewMem()
			fillRequester(t, dst, 2)
			before := dump(t, dst)
			p := &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src}, failAt: tc.failAt}
			client := startTestPeer(t, p)
			lc0 := src.lc
			r := &SyncRequester{FSID: testFSID, Name: "b", MaxKeys: 40, MaxBytes: 8192, RetryDelay: 1}
			res, err := r.Run(context.Background(), client, dst)
			if err != nil {
				t.Fatal(err)
			}
			src.mu.Lock()
			src.paused = true
			src.mu.Unlock()
			if res.LastCommitted <= lc0+20 {
				t.Fatalf("lc went from %d to only %d: the copy was not fuzzy enough to test anything", lc0, res.LastCommitted)
			}
			want, ok := src.states[res.LastCommitted]
			if !ok {
				t.Fatalf("no provider state at lc %d", res.LastCommitted)
			}
			// Drop the acceptor keys of the provider from its recorded state.
			want = without(want, syncLocalBuckets...)
			want[paxos.Bucket] = maps.Clone(want[paxos.Bucket])
			delete(want[paxos.Bucket], paxos.KeyPendingV)
			delete(want[paxos.Bucket], paxos.KeyPendingPN)
			delete(want[paxos.Bucket], string(kvstore.U64Key(res.LastCommitted+1)))
			got := dump(t, dst)
			if d := diffDumps(without(got, syncLocalBuckets...), want); d != "" {
				t.Fatalf("synced store is not the provider's state at lc %d: %s", res.LastCommitted, d)
			}
			if !maps.Equal(got[kvstore.BucketElection], before[kvstore.BucketElection]) {
				t.Fatal("election bucket changed")
			}
			if SyncInProgress(dst) {
				t.Fatal("marker left set")
			}
			wantAttempts := 1
			if tc.failAt != nil {
				wantAttempts = 2
				if rq := p.requests[1]; !rq.GetResume() || rq.GetReplayFrom() < lc0 {
					t.Fatalf("second call %v is not a resume", rq)
				}
			}
			if res.Attempts != wantAttempts {
				t.Fatalf("%d attempts, want %d", res.Attempts, wantAttempts)
			}
		})
	}
}

func TestSyncResumeFromLastKey(t *testing.T) {
	src, dst := openDB(t, "a.db"), openDB(t, "b.db")
	fillProvider(t, src, rand.New(rand.NewPCG(5, 6)))
	fillRequester(t, dst, 1)
	before := dump(t, dst)
	p := &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src},
		failAt: func(_ *minimonv1.SyncChunk, sent int) bool { return sent == 4 }}
	client := startTestPeer(t, p)
	r := &SyncRequester{FSID: testFSID, Name: "b", MaxKeys: 100, RetryDelay: 1}
	res, err := r.Run(context.Background(), client, dst)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || len(p.requests) != 2 {
		t.Fatalf("%d attempts, %d calls; want 2", res.Attempts, len(p.requests))
	}
	rq := p.requests[1]
	// The fourth chunk applied ended where the fifth (the broken one) would have started.
	prev := p.chunks[3].GetChunk()
	if !rq.GetResume() || rq.GetStartBucket() != prev.GetNextBucket() || string(rq.GetStartKey()) != string(prev.GetNextKey()) {
		t.Fatalf("resume request %v does not start after the last applied chunk (next %q/%q)", rq,
			prev.GetNextBucket(), prev.GetNextKey())
	}
	checkSynced(t, src, dst, before)
}

func TestSyncRequesterKilledLeavesMarker(t *testing.T) {
	src, dst := openDB(t, "a.db"), openDB(t, "b.db")
	fillProvider(t, src, rand.New(rand.NewPCG(7, 8)))
	fillRequester(t, dst, 17)
	before := dump(t, dst)
	if SyncInProgress(dst) {
		t.Fatal("marker set before any sync")
	}
	client := startTestPeer(t, &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src}})
	r := &SyncRequester{FSID: testFSID, Name: "b", MaxKeys: 100, Floor: 5}
	r.afterChunk = func(n int) error {
		if n == 3 {
			return errSyncStopped
		}
		return nil
	}
	if _, err := r.Run(context.Background(), client, dst); !errors.Is(err, errSyncStopped) {
		t.Fatalf("Run: %v, want the stop", err)
	}
	if !SyncInProgress(dst) {
		t.Fatal("a sync stopped mid-way left no marker")
	}
	if f, ok, err := SyncFloor(dst); err != nil || !ok || f != 17 {
		t.Fatalf("floor %d %v %v, want 17 (the requester's own lc)", f, ok, err)
	}
	// A restarted monitor syncs again from scratch and ends clean.
	r2 := &SyncRequester{FSID: testFSID, Name: "b", MaxKeys: 100}
	if _, err := r2.Run(context.Background(), client, dst); err != nil {
		t.Fatal(err)
	}
	checkSynced(t, src, dst, before)
}

func TestSyncRestartKeepsPersistedFloor(t *testing.T) {
	src, dst := kvstore.NewMem(), kvstore.NewMem()
	fillProvider(t, src, rand.New(rand.NewPCG(9, 9))) // lc 40
	// An interrupted sync whose wiped store had reached lc 50: this provider is too old.
	mustApply(t, dst, put(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress), kvstore.U64Key(50)))
	client := startTestPeer(t, &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src}})
	_, err := (&SyncRequester{FSID: testFSID, Name: "b"}).Run(context.Background(), client, dst)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Run: %v, want FailedPrecondition", err)
	}
}

func TestSyncRefusals(t *testing.T) {
	src := kvstore.NewMem()
	fillProvider(t, src, rand.New(rand.NewPCG(1, 1))) // lc 40, fc 1
	mustApply(t, src, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: paxos.Bucket,
		Key: kvstore.U64Key(1), End: kvstore.U64Key(30)}, put(paxos.Bucket, []byte(paxos.KeyFirstCommitted), kvstore.U64Key(30)))
	client := startTestPeer(t, &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src}})
	for _, tc := range []struct {
		name string
		r    *SyncRequester
		lc   uint64
		want codes.Code
	}{
		{"floor-above-lc", &SyncRequester{FSID: testFSID, Name: "b"}, 41, codes.FailedPrecondition},
		{"caller-floor-above-lc", &SyncRequester{FSID: testFSID, Name: "b", Floor: 1000}, 0, codes.FailedPrecondition},
		{"wrong-fsid", &SyncRequester{FSID: "other", Name: "b"}, 0, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := kvstore.NewMem()
			fillRequester(t, dst, tc.lc)
			before := dump(t, dst)
			_, err := tc.r.Run(context.Background(), client, dst)
			if status.Code(err) != tc.want {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
			if d := diffDumps(dump(t, dst), before); d != "" {
				t.Fatalf("a refused sync changed the store: %s", d)
			}
		})
	}
	t.Run("trimmed-replay", func(t *testing.T) {
		st, err := client.Sync(context.Background(), &minimonv1.SyncRequest{Fsid: testFSID, Resume: true,
			CopyDone: true, ReplayFrom: 10})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.OutOfRange {
			t.Fatalf("Recv: %v, want OutOfRange", err)
		}
	})
	t.Run("provider-syncing", func(t *testing.T) {
		busy := kvstore.NewMem()
		mustApply(t, busy, put(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress), kvstore.U64Key(0)))
		c := startTestPeer(t, &testPeer{prov: &SyncProvider{FSID: testFSID, Store: busy}})
		_, err := (&SyncRequester{FSID: testFSID, MaxAttempts: 1}).Run(context.Background(), c, kvstore.NewMem())
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Run: %v, want Unavailable", err)
		}
	})
}

func TestSyncEmptyProvider(t *testing.T) {
	src, dst := kvstore.NewMem(), kvstore.NewMem()
	mustApply(t, src, put(kvstore.BucketMeta, []byte(kvstore.KeyName), []byte("a")))
	fillRequester(t, dst, 0)
	before := dump(t, dst)
	client := startTestPeer(t, &testPeer{prov: &SyncProvider{FSID: testFSID, Store: src}})
	res, err := (&SyncRequester{FSID: testFSID, Name: "b"}).Run(context.Background(), client, dst)
	if err != nil || res.LastCommitted != 0 {
		t.Fatalf("Run: %+v %v", res, err)
	}
	checkSynced(t, src, dst, before)
}
