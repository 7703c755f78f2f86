package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

// builtStore runs a real cluster of n in-process monitors, writes keys through the first, stops
// every monitor and returns their configs (the stores are then offline) and the keys written.
func builtStore(t *testing.T, n, keys int) ([]Config, map[string]string) {
	t.Helper()
	cfgs, lis := newCluster(t, n)
	mons := startAll(t, cfgs, lis)
	waitQuorum(t, mons)
	written := map[string]string{}
	for i := range keys {
		k, v := fmt.Sprintf("key-%02d", i), fmt.Sprintf("value-%d", i)
		kvSet(t, mons[0], k, v)
		written[k] = v
	}
	// One more write: a reply means the value is durably accepted (on this monitor when it is
	// alone), and the store writer is in order, so everything committed before it, monmap
	// epoch 1 and the keys above included, is durable when the monitors stop. Without it a
	// fast stop can leave epoch 1 accepted but not committed.
	kvSet(t, mons[0], "built", "yes")
	written["built"] = "yes"
	for _, tm := range mons {
		tm.stop()
	}
	return cfgs, written
}

// copyStore copies the store of dataDir into a fresh data dir, so one built store serves many
// cases.
func copyStore(t *testing.T, dataDir string) string {
	t.Helper()
	dst := t.TempDir()
	in, err := os.Open(filepath.Join(dataDir, StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dst, StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// editStore applies ops to the offline store of dataDir.
func editStore(t *testing.T, dataDir string, ops ...*minimonv1.StoreOp) {
	t.Helper()
	st, err := kvstore.Open(filepath.Join(dataDir, StoreFile), kvstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, st, ops...)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func offlineU64(t *testing.T, dataDir, bucket, key string) uint64 {
	t.Helper()
	st, err := kvstore.Open(filepath.Join(dataDir, StoreFile), kvstore.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b, err := st.Get(bucket, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	v, err := kvstore.ParseU64Key(b)
	if err != nil {
		t.Fatalf("%s/%s: %v", bucket, key, err)
	}
	return v
}

func TestOfflineCheck(t *testing.T) {
	cfgs, _ := builtStore(t, 1, 5)
	dir := cfgs[0].DataDir
	lc := offlineU64(t, dir, paxos.Bucket, paxos.KeyLastCommitted)
	fc := offlineU64(t, dir, paxos.Bucket, paxos.KeyFirstCommitted)

	info, err := CheckStore(copyStore(t, dir))
	if err != nil {
		t.Fatalf("CheckStore of a sound store: %v", err)
	}
	fsid := DeriveFSID(cfgs[0].InitialMembers)
	want := fmt.Sprintf("ok: fsid %s, name a, paxos %d..%d, monmap epoch 1 (a)", fsid, fc, lc)
	if got := info.String(); got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
	if lc < 6 {
		t.Fatalf("last_committed %d: the five writes are not in the store", lc)
	}

	del := func(bucket, key string) *minimonv1.StoreOp {
		return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE, Bucket: bucket, Key: []byte(key)}
	}
	otherMap, err := proto.MarshalOptions{Deterministic: true}.Marshal(&minimonv1.MonMap{Epoch: 2, Fsid: fsid,
		Mons: []*minimonv1.MonInfo{{Rank: 0, Name: "z", Addr: "127.0.0.1:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ops  []*minimonv1.StoreOp
		want string
	}{
		{"missing fsid", []*minimonv1.StoreOp{del(kvstore.BucketMeta, kvstore.KeyFSID)}, "meta/fsid is missing"},
		{"missing name", []*minimonv1.StoreOp{del(kvstore.BucketMeta, kvstore.KeyName)}, "meta/name is missing"},
		{"bad format", []*minimonv1.StoreOp{put(kvstore.BucketMeta, []byte(kvstore.KeyFormatVersion), kvstore.U64Key(99))}, "format"},
		{"partial sync", []*minimonv1.StoreOp{put(kvstore.BucketMeta, []byte(kvstore.KeySyncInProgress), kvstore.U64Key(3))},
			"an interrupted sync: the store is partial"},
		{"corrupted version", []*minimonv1.StoreOp{put(paxos.Bucket, kvstore.U64Key(lc-1), []byte{0xff, 0xff, 0xff})},
			fmt.Sprintf("paxos version %d does not decode", lc-1)},
		{"missing version", []*minimonv1.StoreOp{del(paxos.Bucket, string(kvstore.U64Key(lc)))},
			fmt.Sprintf("paxos version %d (of %d..%d) is missing", lc, fc, lc)},
		{"fc after lc", []*minimonv1.StoreOp{put(paxos.Bucket, []byte(paxos.KeyFirstCommitted), kvstore.U64Key(lc+1))},
			"first_committed"},
		{"monmap without us", []*minimonv1.StoreOp{
			put(kvstore.BucketMonmap, kvstore.U64Key(2), otherMap),
			put(kvstore.BucketMonmap, []byte(services.KeyLastCommitted), kvstore.U64Key(2)),
		}, "does not hold this monitor"},
		{"monmap undecodable", []*minimonv1.StoreOp{put(kvstore.BucketMonmap, kvstore.U64Key(1), []byte{0xff})}, "monmap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := copyStore(t, dir)
			editStore(t, d, tc.ops...)
			_, err := CheckStore(d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckStore = %v, want an error with %q", err, tc.want)
			}
		})
	}

	t.Run("torn file", func(t *testing.T) {
		d := copyStore(t, dir)
		path := filepath.Join(d, StoreFile)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Zero every page after the two meta pages: the meta's references now point at
		// garbage, which a read or bbolt's page check must report.
		page := os.Getpagesize()
		if len(b) <= 2*page {
			t.Fatalf("store of %d bytes: no page beyond the meta pages", len(b))
		}
		for i := 2 * page; i < len(b); i++ {
			b[i] = 0
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = CheckStore(d)
		if err == nil {
			t.Fatal("CheckStore of a torn store succeeded")
		}
	})

	t.Run("no store", func(t *testing.T) {
		_, err := CheckStore(t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "no store at") {
			t.Fatalf("CheckStore of an empty dir = %v", err)
		}
	})
}

// TestOfflineToolsRefuseALockedStore: every tool fails with ErrStoreInUse while the store is
// held, and leaves it unchanged.
func TestOfflineToolsRefuseALockedStore(t *testing.T) {
	cfgs, lis := newCluster(t, 1)
	tm := start(t, cfgs[0], lis[0])
	waitQuorum(t, []*testMon{tm})
	dir := cfgs[0].DataDir
	mm := &minimonv1.MonMap{Mons: []*minimonv1.MonInfo{{Rank: 0, Name: "a", Addr: cfgs[0].Addr}}}

	_, err := CheckStore(dir)
	checkInUse(t, "check", err)
	_, err = ExtractMonmap(dir)
	checkInUse(t, "extract-monmap", err)
	_, err = InjectMonmap(dir, mm, InjectOptions{})
	checkInUse(t, "inject-monmap", err)
	_, _, err = CompactStore(dir)
	checkInUse(t, "compact", err)
	// Still serving on the same store.
	kvSet(t, tm, "after", "tools")
	tm.stop()
	if _, err := CheckStore(dir); err != nil {
		t.Fatalf("check after stop: %v", err)
	}
}

func checkInUse(t *testing.T, tool string, err error) {
	t.Helper()
	if !errors.Is(err, ErrStoreInUse) || !strings.Contains(err.Error(), "store is in use by a running monitord") {
		t.Fatalf("%s on a running monitor's store: %v, want ErrStoreInUse", tool, err)
	}
}

func TestExtractMonmapRoundTrip(t *testing.T) {
	cfgs, _ := builtStore(t, 1, 1)
	mm, err := ExtractMonmap(cfgs[0].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if mm.GetEpoch() != 1 || len(mm.GetMons()) != 1 || mm.GetMons()[0].GetName() != "a" ||
		mm.GetMons()[0].GetAddr() != cfgs[0].Addr {
		t.Fatalf("extracted %v", mm)
	}
	b, err := MarshalMonmapJSON(mm)
	if err != nil {
		t.Fatal(err)
	}
	// Rank 0 is shown, so a hand edit sees every field.
	var generic struct {
		Fsid *string `json:"fsid"`
		Mons []struct {
			Rank *int32 `json:"rank"`
		} `json:"mons"`
	}
	if err := json.Unmarshal(b, &generic); err != nil || generic.Fsid == nil || len(generic.Mons) != 1 || generic.Mons[0].Rank == nil {
		t.Fatalf("json lacks fields:\n%s", b)
	}
	back, err := ParseMonmapJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, mm) {
		t.Fatalf("round trip: %v != %v", back, mm)
	}
	if _, err := ParseMonmapJSON([]byte(`{"epoch": 1, "monz": []}`)); err == nil {
		t.Fatal("a misspelt field was accepted")
	}
}

func TestKeepMonmap(t *testing.T) {
	cur := &minimonv1.MonMap{Epoch: 4, Fsid: "f", Mons: []*minimonv1.MonInfo{
		{Rank: 0, Name: "a", Addr: "h:1"}, {Rank: 1, Name: "b", Addr: "h:2"}, {Rank: 2, Name: "c", Addr: "h:3"},
	}}
	got, err := KeepMonmap(cur, []string{"c", "a"})
	if err != nil {
		t.Fatal(err)
	}
	want := &minimonv1.MonMap{Epoch: 4, Fsid: "f", Mons: []*minimonv1.MonInfo{
		{Rank: 0, Name: "a", Addr: "h:1"}, {Rank: 1, Name: "c", Addr: "h:3"},
	}}
	if !proto.Equal(got, want) {
		t.Fatalf("KeepMonmap = %v, want %v", got, want)
	}
	if cur.GetMons()[2].GetRank() != 2 {
		t.Fatal("KeepMonmap changed its input")
	}
	for _, names := range [][]string{nil, {"x"}, {"a", "a"}} {
		if _, err := KeepMonmap(cur, names); err == nil {
			t.Errorf("KeepMonmap(%v) succeeded", names)
		}
	}
}

// TestInjectMonmapQuorumOfOne: the lost-quorum runbook in process. Three monitors write keys;
// b and c are gone for good; a's map is cut down to a alone by inject-monmap; a started with
// no member flags forms a quorum of one, holds every key and accepts writes.
func TestInjectMonmapQuorumOfOne(t *testing.T) {
	cfgs, written := builtStore(t, 3, 5)
	dir := cfgs[0].DataDir
	cur, err := ExtractMonmap(dir)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := KeepMonmap(cur, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	got, err := InjectMonmap(dir, keep, InjectOptions{EpochJump: 100, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetEpoch() != cur.GetEpoch()+100 || len(got.GetMons()) != 1 || got.GetModified() != now.Format(time.RFC3339) {
		t.Fatalf("injected %v (current epoch %d)", got, cur.GetEpoch())
	}
	info, err := CheckStore(dir)
	if err != nil {
		t.Fatalf("check after inject: %v", err)
	}
	if info.Monmap.GetEpoch() != got.GetEpoch() || !strings.HasSuffix(info.String(), fmt.Sprintf("monmap epoch %d (a)", got.GetEpoch())) {
		t.Fatalf("check after inject: %s", info)
	}

	// Start a alone from its store: name, data dir and address only.
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Addr = "a", dir, cfgs[0].Addr
	tm := start(t, cfg, nil)
	waitQuorum(t, []*testMon{tm})
	for k, v := range written {
		if got := kvGet(t, tm, k); got != v {
			t.Errorf("after inject %s = %q, want %q", k, got, v)
		}
	}
	kvSet(t, tm, "new", "write")
	if got := kvGet(t, tm, "new"); got != "write" {
		t.Fatalf("new write read back %q", got)
	}
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetQuorum()) != 1 || st.GetState() != "leader" {
		t.Fatalf("mon_status after inject: %v", st)
	}
}

func TestInjectMonmapValidation(t *testing.T) {
	cfgs, _ := builtStore(t, 1, 0)
	dir := cfgs[0].DataDir
	addr := cfgs[0].Addr
	fsid := DeriveFSID(cfgs[0].InitialMembers)
	mons := func(m ...*minimonv1.MonInfo) *minimonv1.MonMap { return &minimonv1.MonMap{Mons: m} }
	mi := func(r int32, n, a string) *minimonv1.MonInfo { return &minimonv1.MonInfo{Rank: r, Name: n, Addr: a} }
	for _, tc := range []struct {
		name string
		mm   *minimonv1.MonMap
		want string
	}{
		{"empty", mons(), "no monitor"},
		{"without us", mons(mi(0, "b", "127.0.0.1:9")), "does not hold this monitor"},
		{"bad name", mons(mi(0, "a", addr), mi(1, "b/x", "127.0.0.1:9")), "only letters"},
		{"bad addr", mons(mi(0, "a", addr), mi(1, "b", "nowhere")), "host:port"},
		{"dup name", mons(mi(0, "a", addr), mi(1, "a", "127.0.0.1:9")), "listed twice"},
		{"dup addr", mons(mi(0, "a", addr), mi(1, "b", addr)), "same address"},
		{"rank gap", mons(mi(0, "a", addr), mi(2, "b", "127.0.0.1:9")), "ranks"},
		{"foreign fsid", &minimonv1.MonMap{Fsid: "other", Mons: []*minimonv1.MonInfo{mi(0, "a", addr)}}, "cluster other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := InjectMonmap(dir, tc.mm, InjectOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("InjectMonmap = %v, want an error with %q", err, tc.want)
			}
		})
	}
	// Nothing was written by the refusals.
	mm, err := ExtractMonmap(dir)
	if err != nil || mm.GetEpoch() != 1 {
		t.Fatalf("after refused injects: %v, %v", mm, err)
	}

	// A valid map in another rank order, without fsid: sorted by rank, fsid filled in, epoch
	// bumped by one (a jump of 0 still moves forward).
	got, err := InjectMonmap(dir, mons(mi(1, "b", "127.0.0.1:9"), mi(0, "a", addr)), InjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetEpoch() != 2 || got.GetFsid() != fsid || got.GetMons()[0].GetName() != "a" {
		t.Fatalf("injected %v", got)
	}
	if ex, err := ExtractMonmap(dir); err != nil || !proto.Equal(ex, got) {
		t.Fatalf("extract after inject: %v, %v; want %v", ex, err, got)
	}

	// An accepted, uncommitted member map change would undo the injection: refused.
	lc := offlineU64(t, dir, paxos.Bucket, paxos.KeyLastCommitted)
	val, err := services.Encode(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		put(kvstore.BucketMonmap, []byte(services.KeyLastCommitted), kvstore.U64Key(9)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	editStore(t, dir, put(paxos.Bucket, kvstore.U64Key(lc+1), val),
		put(paxos.Bucket, []byte(paxos.KeyPendingV), kvstore.U64Key(lc+1)))
	if _, err := InjectMonmap(dir, mons(mi(0, "a", addr)), InjectOptions{}); err == nil ||
		!strings.Contains(err.Error(), "changes the member map") {
		t.Fatalf("inject over a pending monmap change: %v", err)
	}
}

func TestCompactStore(t *testing.T) {
	cfgs, written := builtStore(t, 1, 30)
	dir := cfgs[0].DataDir
	before, after, err := CompactStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if before <= 0 || after <= 0 || after > before {
		t.Fatalf("sizes before %d after %d", before, after)
	}
	if _, err := CheckStore(dir); err != nil {
		t.Fatalf("check after compact: %v", err)
	}
	// The compacted store runs, with its data.
	l, err := net.Listen("tcp", cfgs[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	tm := start(t, cfgs[0], l)
	waitQuorum(t, []*testMon{tm})
	for k, v := range written {
		if got := kvGet(t, tm, k); got != v {
			t.Errorf("after compact %s = %q, want %q", k, got, v)
		}
	}
	if _, _, err := CompactStore(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no store at") {
		t.Fatalf("compact of an empty dir: %v", err)
	}
}
