package monitor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
	"github.com/minimon/minimon/internal/services"
)

func TestDedupRecordRoundTrip(t *testing.T) {
	r := &dedupRecord{}
	for seq := uint64(1); seq <= dedupMaxSeqs+3; seq++ {
		r = r.with(dedupEntry{Seq: seq, Hint: 10 * seq, Msg: fmt.Sprintf("set k%d", seq)})
	}
	if len(r.Entries) != dedupMaxSeqs || r.Floor != 3 || r.Entries[0].Seq != 4 {
		t.Fatalf("bounded record: floor %d, %d entries from %d", r.Floor, len(r.Entries), r.Entries[0].Seq)
	}
	got, err := decodeDedupRecord(encodeDedupRecord(r))
	if err != nil {
		t.Fatal(err)
	}
	if got.Floor != r.Floor || !slices.Equal(got.Entries, r.Entries) {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
	if got.lastHint() != 10*(dedupMaxSeqs+3) {
		t.Fatalf("lastHint %d", got.lastHint())
	}
}

func TestDedupRecordDamaged(t *testing.T) {
	good := encodeDedupRecord((&dedupRecord{}).with(dedupEntry{Seq: 7, Hint: 3, Msg: "set key"}))
	for i := range len(good) {
		if _, err := decodeDedupRecord(good[:i]); err == nil {
			t.Fatalf("truncated record of %d bytes decoded", i)
		}
	}
	for _, b := range [][]byte{nil, {2}, append(slices.Clone(good), 0), {1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := decodeDedupRecord(b); err == nil {
			t.Fatalf("decoded %x", b)
		}
	}
}

// commitRecord applies the dedup ops of a staged write as a committed value would.
func commitRecord(t *testing.T, st *kvstore.Mem, d *dedupTable, ops []*minimonv1.StoreOp, v uint64) {
	t.Helper()
	tx := services.Merge(ops)
	if err := st.Apply(tx); err != nil {
		t.Fatal(err)
	}
	b, err := services.Encode(tx)
	if err != nil {
		t.Fatal(err)
	}
	d.committed([]paxos.Entry{{Version: v, Value: b}})
}

func TestDedupCheck(t *testing.T) {
	st := kvstore.NewMem()
	d := newDedupTable()
	yes := func() bool { return true }
	wid := func(c string, s uint64) *minimonv1.WriteID { return &minimonv1.WriteID{ClientId: c, Seq: s} }

	if v, ok := d.check(st, wid("a", 1), func() bool { return false }); !ok || !v.wait {
		t.Fatalf("not readable yet: %+v %v, want wait", v, ok)
	}
	if _, ok := d.check(st, wid("", 1), yes); ok {
		t.Fatal("a write without client id was deduplicated")
	}
	if _, ok := d.check(st, wid("a", 1), yes); ok {
		t.Fatal("a new write was deduplicated")
	}
	ops, stage, err := d.prepare(st, wid("a", 1), "set x", 5)
	if err != nil || len(ops) != 1 {
		t.Fatalf("prepare: %v %v", ops, err)
	}
	done := stage()
	// In flight: a resend attaches to the proposal's result.
	v, ok := d.check(st, wid("a", 1), yes)
	if !ok || v.attach == nil || v.msg != "set x" {
		t.Fatalf("resend in flight: %+v %v", v, ok)
	}
	done(paxos.Result{Version: 6})
	if r := <-v.attach; r.Version != 6 {
		t.Fatalf("attached result %+v", r)
	}
	// Completed but not yet in the store (design 4.6): still answered, from the staged record.
	v, ok = d.check(st, wid("a", 1), yes)
	if !ok || v.reply == nil || v.reply.GetMessage() != "set x" {
		t.Fatalf("resend before the commit write: %+v %v", v, ok)
	}
	commitRecord(t, st, d, ops, 6)
	if len(d.staged) != 0 {
		t.Fatalf("staged not dropped after commit: %v", d.staged)
	}
	v, ok = d.check(st, wid("a", 1), yes)
	if !ok || v.reply == nil || v.reply.GetMessage() != "set x" || v.err != nil {
		t.Fatalf("resend after commit: %+v %v", v, ok)
	}
	// A new leader (fresh table) answers from the store alone.
	d2 := newDedupTable()
	if v, ok := d2.check(st, wid("a", 1), yes); !ok || v.reply.GetMessage() != "set x" {
		t.Fatalf("fresh table: %+v %v", v, ok)
	}
	// Out-of-order seqs of one client are new writes until they fall to the floor.
	for seq := uint64(3); seq < 3+dedupMaxSeqs; seq++ {
		ops, stage, err := d.prepare(st, wid("a", seq), "set y", 6+seq)
		if err != nil {
			t.Fatal(err)
		}
		stage()(paxos.Result{Version: 7 + seq})
		commitRecord(t, st, d, ops, 7+seq)
	}
	if _, ok := d.check(st, wid("a", 2), yes); ok {
		t.Fatal("seq 2 (never applied, above the floor) refused")
	}
	ops, stage, _ = d.prepare(st, wid("a", 100), "set z", 50)
	stage()
	commitRecord(t, st, d, ops, 51)
	if v, ok := d.check(st, wid("a", 2), yes); !ok || status.Code(v.err) != codes.FailedPrecondition {
		t.Fatalf("stale seq: %+v %v, want FailedPrecondition", v, ok)
	}
	// Lost leadership forgets what is staged.
	_, stage, _ = d.prepare(st, wid("b", 1), "set b", 60)
	stage()
	d.discard()
	if len(d.staged)+len(d.inflight) != 0 || d.ready {
		t.Fatal("discard kept state")
	}
}

func TestDedupEvictsOldestClient(t *testing.T) {
	st := kvstore.NewMem()
	d := newDedupTable()
	// Fill the table directly (a committed state of dedupMaxClients clients).
	var ops []*minimonv1.StoreOp
	for i := range dedupMaxClients {
		rec := (&dedupRecord{}).with(dedupEntry{Seq: 1, Hint: uint64(1000 + i), Msg: "m"})
		ops = append(ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketDedup,
			Key: []byte(fmt.Sprintf("c%05d", i)), Value: encodeDedupRecord(rec)})
	}
	ops[42].Value = encodeDedupRecord((&dedupRecord{}).with(dedupEntry{Seq: 1, Hint: 7, Msg: "m"}))
	if err := st.Apply(services.Merge(ops)); err != nil {
		t.Fatal(err)
	}
	got, _, err := d.prepare(st, &minimonv1.WriteID{ClientId: "new", Seq: 1}, "set", 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].GetKind() != minimonv1.StoreOp_ERASE || string(got[1].GetKey()) != "c00042" {
		t.Fatalf("ops %v, want the record plus an erase of c00042", got)
	}
	// A known client evicts nobody.
	got, _, _ = d.prepare(st, &minimonv1.WriteID{ClientId: "c00001", Seq: 2}, "set", 5000)
	if len(got) != 1 {
		t.Fatalf("known client: %d ops", len(got))
	}
}

// kvPuts counts the committed Paxos versions that put key into the kv bucket.
func kvPuts(t *testing.T, m *Monitor, key string) (versions []uint64) {
	t.Helper()
	fc, _ := kvstore.ParseU64Key(mustGet(t, m.store, paxos.KeyFirstCommitted))
	lc, _ := kvstore.ParseU64Key(mustGet(t, m.store, paxos.KeyLastCommitted))
	for v := max(fc, 1); v <= lc; v++ {
		b, err := m.store.Get(paxos.Bucket, kvstore.U64Key(v))
		if err != nil || b == nil {
			t.Fatalf("version %d: %v", v, err)
		}
		tx, err := services.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range tx.GetOps() {
			if op.GetBucket() == kvstore.BucketKV && string(op.GetKey()) == key {
				versions = append(versions, v)
			}
		}
	}
	return versions
}

func mustGet(t *testing.T, st kvstore.Store, key string) []byte {
	t.Helper()
	b, err := st.Get(paxos.Bucket, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDedupResendSameWriteID: a write resent with its WriteID, to the leader or through a peon,
// sequentially or while the first is in flight, commits once and every answer names that
// commit.
func TestDedupResendSameWriteID(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	peon := mons[(li+1)%3]
	wid := &minimonv1.WriteID{ClientId: "test-client", Seq: 1}
	req := &minimonv1.KVSetRequest{Key: "dup", Value: []byte("v1"), WriteId: wid}

	var wg sync.WaitGroup
	replies := make([]*minimonv1.KVWriteReply, 4)
	errs := make([]error, 4)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := rpcCtx(5 * time.Second)
			defer cancel()
			target := mons[li]
			if i%2 == 1 {
				target = peon
			}
			replies[i], errs[i] = target.c.KVSet(ctx, req)
		}()
	}
	wg.Wait()
	for i := range replies {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		if replies[i].GetVersion() == 0 || replies[i].GetVersion() != replies[0].GetVersion() || replies[i].GetMessage() != "set dup" {
			t.Fatalf("replies differ: %v vs %v", replies[i], replies[0])
		}
	}
	// Sequential resend after the commit, and a new seq that changes the value.
	ctx, cancel := rpcCtx(5 * time.Second)
	defer cancel()
	r, err := peon.c.KVSet(ctx, req)
	if err != nil || r.GetVersion() != replies[0].GetVersion() {
		t.Fatalf("sequential resend: %v %v, want version %d", r, err, replies[0].GetVersion())
	}
	if _, err := mons[li].c.KVSet(ctx, &minimonv1.KVSetRequest{Key: "dup", Value: []byte("v2"),
		WriteId: &minimonv1.WriteID{ClientId: "test-client", Seq: 2}}); err != nil {
		t.Fatal(err)
	}
	// Without a client id nothing is deduplicated.
	for range 2 {
		if _, err := mons[li].c.KVSet(ctx, &minimonv1.KVSetRequest{Key: "nodedup", Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if got := kvPuts(t, mons[li].m, "dup"); len(got) != 2 || got[0] != replies[0].GetVersion() {
		t.Fatalf("dup committed at %v, want [%d, later]", got, replies[0].GetVersion())
	}
	if got := kvPuts(t, mons[li].m, "nodedup"); len(got) != 2 {
		t.Fatalf("nodedup committed at %v, want twice", got)
	}
}

// TestDedupLeaderCrashBeforeReply is scenario 35 with a lost reply: the leader stops after the
// write is chosen and before it answers; the client library resends the same WriteID to
// another monitor, and the write is applied exactly once.
func TestDedupLeaderCrashBeforeReply(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader := mons[li]
	if !leader.m.armFailpoint(FailpointCrashBeforeReply) {
		t.Fatal("failpoint unknown")
	}
	var eps []string
	for _, c := range cfgs {
		eps = append(eps, c.Addr)
	}
	cl, err := client.New(client.Config{Endpoints: eps, Logger: zaptest.NewLogger(t).Named("client"),
		DialTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := cl.KVSet(ctx, "once", []byte("attempt-1"))
	if err != nil {
		t.Fatalf("KVSet: %v", err)
	}
	// The leader stopped itself at the failpoint.
	select {
	case err := <-leader.done:
		if !errors.Is(err, errFailpoint) {
			t.Fatalf("leader Run = %v, want the failpoint", err)
		}
		leader.cancel()
		leader.cancel = nil
		_ = leader.cc.Close()
	case <-time.After(waitTimeout):
		t.Fatal("the leader did not stop at the failpoint")
	}
	var rest []*testMon
	for i, tm := range mons {
		if i != li {
			rest = append(rest, tm)
		}
	}
	waitQuorum(t, rest)
	for _, tm := range rest {
		waitPuts(t, tm, "once", 1, r.GetVersion())
	}
	// The next write of the same client is a new one.
	if _, err := cl.KVSet(ctx, "once", []byte("attempt-2")); err != nil {
		t.Fatal(err)
	}
	for _, tm := range rest {
		waitPuts(t, tm, "once", 2, r.GetVersion())
	}
}

// waitPuts waits until tm's store has committed exactly n puts of key, the first at version
// first (a peon applies a commit a moment after the leader's reply); more fails at once.
func waitPuts(t *testing.T, tm *testMon, key string, n int, first uint64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := kvPuts(t, tm.m, key)
		if len(got) == n && got[0] == first {
			return
		}
		if len(got) > n || time.Now().After(deadline) {
			t.Fatalf("mon.%s: %q committed at versions %v, want %d times from version %d", tm.cfg.Name, key, got, n, first)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
