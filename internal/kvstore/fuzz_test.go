package kvstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"google.golang.org/protobuf/proto"
)

// twins is a DB and a Mem that must always agree.
type twins struct {
	db  *DB
	mem *Mem
}

func newTwins(t testing.TB) *twins {
	t.Helper()
	return &twins{db: openDB(t, filepath.Join(t.TempDir(), "twin.db")), mem: NewMem()}
}

// base is the state each fuzz input starts from, so erases have something to hit.
var base = txn(put("kv", "a", "1"), put("kv", "b", "2"), put("kv", "c", ""),
	put("paxos", string(U64Key(1)), "v1"), put("paxos", string(U64Key(2)), "v2"), put("meta", "fsid", "f"))

// reset brings both stores back to base.
func (w *twins) reset(t testing.TB) {
	t.Helper()
	sizes, err := w.db.Sizes()
	if err != nil {
		t.Fatal(err)
	}
	var ops []*minimonv1.StoreOp
	for name := range sizes {
		ops = append(ops, eraseRange(name, "", ""))
	}
	mustApply(t, w.db, append(ops, base.GetOps()...)...)
	w.mem = NewMem()
	mustApply(t, w.mem, base.GetOps()...)
}

// same fails unless both stores hold the same pairs and sizes.
func (w *twins) same(t testing.TB) []pair {
	t.Helper()
	d, m := dump(t, w.db), dump(t, w.mem)
	if !slices.Equal(d, m) {
		t.Fatalf("bbolt and mem differ:\nbbolt %v\nmem   %v", d, m)
	}
	ds, err1 := w.db.Sizes()
	ms, err2 := w.mem.Sizes()
	if err1 != nil || err2 != nil || fmt.Sprint(ds) != fmt.Sprint(ms) {
		t.Fatalf("sizes differ: %v %v / %v %v", ds, err1, ms, err2)
	}
	return d
}

// sameErr fails unless both errors are nil, or both are the given sentinel.
func sameErr(t testing.TB, what string, dbErr, memErr, sentinel error) {
	t.Helper()
	if (dbErr == nil) != (memErr == nil) || (dbErr != nil && (!errors.Is(dbErr, sentinel) || !errors.Is(memErr, sentinel))) {
		t.Fatalf("%s: bbolt %v, mem %v", what, dbErr, memErr)
	}
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeTransaction feeds arbitrary bytes through decoding, validation and Apply on both
// implementations: nothing may panic, both must accept or reject alike and end up equal, and
// a rejected transaction must leave the store untouched.
func FuzzDecodeTransaction(f *testing.F) {
	for _, tx := range []*minimonv1.Transaction{
		base,
		txn(put("kv", "d", "4"), erase("kv", "a"), eraseRange("paxos", "", string(U64Key(2)))),
		txn(eraseRange("kv", "b", ""), eraseRange("meta", "", "")),
		txn(put("kv", "x", "1"), eraseRange("kv", "z", "a")), // invalid: end < key
		txn(put("", "k", "v")),
		txn(&minimonv1.StoreOp{Kind: 7, Bucket: "kv", Key: []byte("a")}),
		txn(erase("kv", "")),
		{},
	} {
		f.Add(marshal(f, tx))
	}
	f.Add([]byte{0x0a, 0x03, 0x08, 0x01})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Add([]byte(nil))
	w := newTwins(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var tx minimonv1.Transaction
		if err := proto.Unmarshal(data, &tx); err != nil {
			return
		}
		w.reset(t)
		before := w.same(t)
		verr := ValidateTransaction(&tx)
		dbErr, memErr := w.db.Apply(&tx), w.mem.Apply(&tx)
		sameErr(t, "Apply", dbErr, memErr, ErrInvalidTransaction)
		if (verr == nil) != (dbErr == nil) {
			t.Fatalf("ValidateTransaction %v but Apply %v", verr, dbErr)
		}
		after := w.same(t)
		if dbErr != nil && !slices.Equal(before, after) {
			t.Fatalf("rejected transaction changed the store: %v", after)
		}
	})
}

// FuzzImport does the same for export chunks.
func FuzzImport(f *testing.F) {
	src := NewMem()
	fill(f, src, 9)
	for _, b := range []struct{ bytes, keys int }{{0, 3}, {200, 0}, {0, 0}} {
		c, err := src.Export("kv", nil, b.bytes, b.keys)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(marshal(f, c))
	}
	f.Add(marshal(f, &minimonv1.ExportChunk{Pairs: []*minimonv1.ExportChunk_Pair{{Bucket: "", Key: []byte("k")}}}))
	f.Add(marshal(f, &minimonv1.ExportChunk{Pairs: []*minimonv1.ExportChunk_Pair{{Bucket: "kv"}}}))
	f.Add(marshal(f, &minimonv1.ExportChunk{Done: true, NextBucket: "x", NextKey: []byte("y")}))
	f.Add([]byte{0x0a, 0x00, 0x0a, 0x02, 0x0a, 0x00})
	w := newTwins(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c minimonv1.ExportChunk
		if err := proto.Unmarshal(data, &c); err != nil {
			return
		}
		w.reset(t)
		before := w.same(t)
		dbErr, memErr := w.db.Import(&c), w.mem.Import(&c)
		sameErr(t, "Import", dbErr, memErr, ErrInvalidChunk)
		after := w.same(t)
		if dbErr != nil && !slices.Equal(before, after) {
			t.Fatalf("rejected chunk changed the store: %v", after)
		}
	})
}

// TestDifferentialRandom drives both implementations with the same seeded random transactions
// (some invalid) and compares every read API after each step.
func TestDifferentialRandom(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			w := newTwins(t)
			buckets := []string{"a", "kv", "kv2", "paxos", "z"}
			key := func() string {
				if rng.IntN(2) == 0 {
					return string(U64Key(rng.Uint64N(20)))
				}
				return string(rune('a' + rng.IntN(8)))
			}
			for step := range 150 {
				var ops []*minimonv1.StoreOp
				for range 1 + rng.IntN(6) {
					b := buckets[rng.IntN(len(buckets))]
					switch r := rng.IntN(20); {
					case r < 11:
						ops = append(ops, put(b, key(), fmt.Sprint(step, r)))
					case r < 15:
						ops = append(ops, erase(b, key()))
					case r < 19:
						lo, hi := key(), key()
						if rng.IntN(4) == 0 {
							hi = ""
						}
						if hi != "" && hi < lo {
							lo, hi = hi, lo
						}
						ops = append(ops, eraseRange(b, lo, hi))
					default: // an invalid op now and then
						ops = append(ops, []*minimonv1.StoreOp{put("", "k", "v"), eraseRange(b, "b", "a"), erase(b, "")}[rng.IntN(3)])
					}
				}
				tx := txn(ops...)
				sameErr(t, fmt.Sprint("step ", step), w.db.Apply(tx), w.mem.Apply(tx), ErrInvalidTransaction)
				w.same(t)

				b, start := buckets[rng.IntN(len(buckets))], []byte(key())
				if d, m := keysOf(t, w.db, b, start), keysOf(t, w.mem, b, start); !slices.Equal(d, m) {
					t.Fatalf("ForEach(%s, %q): bbolt %q, mem %q", b, start, d, m)
				}
				maxBytes, maxKeys := rng.IntN(40), rng.IntN(5)
				dc, err1 := w.db.Export(b, start, maxBytes, maxKeys)
				mc, err2 := w.mem.Export(b, start, maxBytes, maxKeys)
				if err1 != nil || err2 != nil || !proto.Equal(dc, mc) {
					t.Fatalf("Export(%s, %q, %d, %d):\nbbolt %v %v\nmem   %v %v", b, start, maxBytes, maxKeys, dc, err1, mc, err2)
				}
			}
		})
	}
}

// BenchmarkApply measures one small committed transaction on bbolt with fsync on (a Paxos
// commit writes about this much: the value, last_committed and a service key).
func BenchmarkApply(b *testing.B) {
	d := openDB(b, filepath.Join(b.TempDir(), "bench.db"))
	value := make([]byte, 512)
	b.ReportAllocs()
	var v uint64
	for b.Loop() {
		v++
		err := d.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
			{Kind: minimonv1.StoreOp_PUT, Bucket: BucketPaxos, Key: U64Key(v), Value: value},
			{Kind: minimonv1.StoreOp_PUT, Bucket: BucketPaxos, Key: []byte("last_committed"), Value: U64Key(v)},
			{Kind: minimonv1.StoreOp_PUT, Bucket: BucketKV, Key: []byte("key"), Value: U64Key(v)},
		}})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemApply is the in-memory twin's cost for the same transaction.
func BenchmarkMemApply(b *testing.B) {
	m := NewMem()
	value := make([]byte, 512)
	var v uint64
	for b.Loop() {
		v++
		if err := m.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
			{Kind: minimonv1.StoreOp_PUT, Bucket: BucketPaxos, Key: U64Key(v), Value: value},
			{Kind: minimonv1.StoreOp_PUT, Bucket: BucketPaxos, Key: []byte("last_committed"), Value: U64Key(v)},
		}}); err != nil {
			b.Fatal(err)
		}
	}
}
