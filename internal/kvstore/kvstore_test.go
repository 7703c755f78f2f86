package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"google.golang.org/protobuf/proto"
)

// impl builds one Store implementation for the table-driven tests. reopen closes s and returns
// the store as it is found afterwards (DB: reopened from its file; Mem: the surviving clone).
type impl struct {
	name   string
	open   func(t testing.TB) Store
	reopen func(t testing.TB, s Store) Store
}

func impls() []impl {
	return []impl{
		{
			name: "bbolt",
			open: func(t testing.TB) Store {
				t.Helper()
				return openDB(t, filepath.Join(t.TempDir(), "store.db"))
			},
			reopen: func(t testing.TB, s Store) Store {
				t.Helper()
				d := s.(*DB)
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				return openDB(t, d.Path())
			},
		},
		{
			name: "mem",
			open: func(t testing.TB) Store { return NewMem() },
			reopen: func(t testing.TB, s Store) Store {
				m := s.(*Mem)
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				return m.Clone()
			},
		},
	}
}

func openDB(t testing.TB, path string) *DB {
	t.Helper()
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func forEachImpl(t *testing.T, fn func(t *testing.T, im impl)) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) { fn(t, im) })
	}
}

func put(bucket, key, value string) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: bucket, Key: []byte(key), Value: []byte(value)}
}

func erase(bucket, key string) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE, Bucket: bucket, Key: []byte(key)}
}

func eraseRange(bucket, key, end string) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: bucket, Key: []byte(key), End: []byte(end)}
}

func txn(ops ...*minimonv1.StoreOp) *minimonv1.Transaction {
	return &minimonv1.Transaction{Ops: ops}
}

func mustApply(t testing.TB, s Store, ops ...*minimonv1.StoreOp) {
	t.Helper()
	if err := s.Apply(txn(ops...)); err != nil {
		t.Fatal(err)
	}
}

// pair is one exported pair in a comparable form.
type pair struct{ bucket, key, value string }

// dump returns the whole store through Export (one unbounded chunk).
func dump(t testing.TB, s Store) []pair {
	t.Helper()
	c, err := s.Export("", nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !c.GetDone() {
		t.Fatal("unbounded export not done")
	}
	return pairsOf(c)
}

func pairsOf(c *minimonv1.ExportChunk) []pair {
	var out []pair
	for _, p := range c.GetPairs() {
		out = append(out, pair{p.GetBucket(), string(p.GetKey()), string(p.GetValue())})
	}
	return out
}

func keysOf(t testing.TB, s Store, bucket string, start []byte) []string {
	t.Helper()
	var out []string
	if err := s.ForEach(bucket, start, func(k, v []byte) error {
		out = append(out, string(k))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGetPutErase(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		if v, err := s.Get("kv", []byte("a")); v != nil || err != nil {
			t.Fatalf("absent bucket: got %q, %v", v, err)
		}
		mustApply(t, s, put("kv", "a", "1"), put("kv", "empty", ""))
		v, err := s.Get("kv", []byte("a"))
		if err != nil || string(v) != "1" {
			t.Fatalf("got %q, %v", v, err)
		}
		v[0] = 'X' // a copy: changing it must not change the store
		if v, _ := s.Get("kv", []byte("a")); string(v) != "1" {
			t.Fatalf("store changed through a returned value: %q", v)
		}
		if v, err := s.Get("kv", []byte("empty")); err != nil || v == nil || len(v) != 0 {
			t.Fatalf("empty value: got %#v, %v (want non-nil empty)", v, err)
		}
		if v, err := s.Get("kv", []byte("b")); v != nil || err != nil {
			t.Fatalf("absent key: got %q, %v", v, err)
		}
		mustApply(t, s, erase("kv", "a"), erase("kv", "never"), erase("nobucket", "x"))
		if v, _ := s.Get("kv", []byte("a")); v != nil {
			t.Fatalf("erased key still there: %q", v)
		}
		if _, err := s.Get("", []byte("a")); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("empty bucket name: %v", err)
		}
		// Later ops of a transaction see earlier ones.
		mustApply(t, s, put("kv", "x", "1"), erase("kv", "x"), put("kv", "y", "1"), put("kv", "y", "2"))
		if v, _ := s.Get("kv", []byte("x")); v != nil {
			t.Fatalf("x: %q", v)
		}
		if v, _ := s.Get("kv", []byte("y")); string(v) != "2" {
			t.Fatalf("y: %q", v)
		}
	})
}

func TestApplyAtomicity(t *testing.T) {
	long := strings.Repeat("k", MaxKeySize+1)
	bad := []struct {
		name string
		op   *minimonv1.StoreOp
	}{
		{"empty bucket", put("", "k", "v")},
		{"empty key put", put("kv", "", "v")},
		{"empty key erase", erase("kv", "")},
		{"key too long", put("kv", long, "v")},
		{"bucket name too long", put(long, "k", "v")},
		{"unspecified kind", &minimonv1.StoreOp{Bucket: "kv", Key: []byte("k")}},
		{"unknown kind", &minimonv1.StoreOp{Kind: 99, Bucket: "kv", Key: []byte("k")}},
		{"end before key", eraseRange("kv", "b", "a")},
		{"erase range empty bucket", eraseRange("", "a", "b")},
		{"nil op", nil},
	}
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s, put("kv", "a", "1"), put("kv", "b", "2"))
		before := dump(t, s)
		for _, tc := range bad {
			t.Run(tc.name, func(t *testing.T) {
				// The bad op comes last, after ops that would change every kind of state.
				err := s.Apply(txn(put("kv", "a", "changed"), put("newbucket", "k", "v"),
					eraseRange("kv", "", ""), tc.op))
				if !errors.Is(err, ErrInvalidTransaction) {
					t.Fatalf("got %v, want ErrInvalidTransaction", err)
				}
				if after := dump(t, s); !slices.Equal(before, after) {
					t.Fatalf("store changed by a rejected transaction:\nbefore %v\nafter  %v", before, after)
				}
			})
		}
		if err := s.Apply(nil); !errors.Is(err, ErrInvalidTransaction) {
			t.Fatalf("nil tx: %v", err)
		}
		// Equal bounds are an empty range, not an error.
		mustApply(t, s, eraseRange("kv", "a", "a"))
		if got := dump(t, s); !slices.Equal(before, got) {
			t.Fatalf("empty range erased something: %v", got)
		}
	})
}

func TestForEachOrder(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		rng := rand.New(rand.NewPCG(1, 2))
		var want []string
		var ops []*minimonv1.StoreOp
		for _, i := range rng.Perm(300) {
			k := string(U64Key(uint64(i) * 1000))
			want = append(want, k)
			ops = append(ops, put("paxos", k, fmt.Sprint(i)))
		}
		ops = append(ops, put("paxos", "last_committed", "x"), put("other", "zzz", "y"))
		want = append(want, "last_committed")
		slices.Sort(want)
		mustApply(t, s, ops...)
		if got := keysOf(t, s, "paxos", nil); !slices.Equal(got, want) {
			t.Fatalf("ForEach order:\ngot  %q\nwant %q", got, want)
		}
		// From a start key that exists and one that falls between keys.
		start := U64Key(150 * 1000)
		i, _ := slices.BinarySearch(want, string(start))
		if got := keysOf(t, s, "paxos", start); !slices.Equal(got, want[i:]) {
			t.Fatalf("ForEach from existing start: got %d keys, want %d", len(got), len(want)-i)
		}
		between := U64Key(150*1000 + 1)
		if got := keysOf(t, s, "paxos", between); !slices.Equal(got, want[i+1:]) {
			t.Fatalf("ForEach from between: got %d keys, want %d", len(got), len(want)-i-1)
		}
		// Numeric order of U64Key is byte order.
		var nums []uint64
		_ = s.ForEach("paxos", nil, func(k, v []byte) error {
			if n, err := ParseU64Key(k); err == nil {
				nums = append(nums, n)
			}
			return nil
		})
		if len(nums) != 300 || !slices.IsSorted(nums) {
			t.Fatalf("u64 keys not in numeric order (%d keys)", len(nums))
		}
		// An error from fn stops the walk and comes back.
		stop := errors.New("stop")
		n := 0
		err := s.ForEach("paxos", nil, func(k, v []byte) error {
			n++
			if n == 3 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || n != 3 {
			t.Fatalf("stop: err %v after %d calls", err, n)
		}
		if got := keysOf(t, s, "absent", nil); len(got) != 0 {
			t.Fatalf("absent bucket walked: %q", got)
		}
	})
}

func TestEraseRangeBounds(t *testing.T) {
	keys := []string{"a", "b", "ba", "c", "d"}
	cases := []struct {
		start, end string
		left       []string
	}{
		{"b", "c", []string{"a", "c", "d"}}, // [b, c): end excluded, start included
		{"b", "", []string{"a"}},            // empty end: to the bucket's end
		{"", "c", []string{"c", "d"}},       // empty start: from the beginning
		{"", "", nil},                       // everything
		{"bb", "bz", keys},                  // between keys, nothing inside
		{"a", "a", keys},                    // empty range
		{"0", "a", keys},                    // ends just before the first key
		{"d", "e", []string{"a", "b", "ba", "c"}},
		{"e", "", keys}, // past the end
	}
	forEachImpl(t, func(t *testing.T, im impl) {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("[%s,%s)", tc.start, tc.end), func(t *testing.T) {
				s := im.open(t)
				var ops []*minimonv1.StoreOp
				for _, k := range keys {
					ops = append(ops, put("b1", k, "v"), put("b0", k, "v"), put("b2", k, "v"))
				}
				mustApply(t, s, ops...)
				mustApply(t, s, eraseRange("b1", tc.start, tc.end))
				if got := keysOf(t, s, "b1", nil); !slices.Equal(got, tc.left) {
					t.Fatalf("left %q, want %q", got, tc.left)
				}
				for _, other := range []string{"b0", "b2"} {
					if got := keysOf(t, s, other, nil); !slices.Equal(got, keys) {
						t.Fatalf("neighbour bucket %s changed: %q", other, got)
					}
				}
				sizes, err := s.Sizes()
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := sizes["b1"]; ok != (len(tc.left) > 0) {
					t.Fatalf("bucket b1 present=%v with %d keys left (an emptied bucket is removed)", ok, len(tc.left))
				}
			})
		}
	})
}

func TestSizes(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s, put("kv", "ab", "123"), put("kv", "c", ""), put("meta", "fsid", "0123456789"))
		got, err := s.Sizes()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{"kv": 2 + 3 + 1, "meta": 4 + 10}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Sizes %v, want %v", got, want)
		}
		mustApply(t, s, erase("meta", "fsid"))
		got, _ = s.Sizes()
		if _, ok := got["meta"]; ok || got["kv"] != 6 {
			t.Fatalf("after erase: %v", got)
		}
	})
}

func TestPersistenceAcrossReopen(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s, put(BucketPaxos, string(U64Key(1)), "v1"), put(BucketPaxos, KeyLastCommittedForTest, string(U64Key(1))),
			put(BucketMeta, KeyFSID, "fsid-1"), put("gone", "k", "v"))
		mustApply(t, s, eraseRange("gone", "", ""))
		before := dump(t, s)
		s = im.reopen(t, s)
		if after := dump(t, s); !slices.Equal(before, after) {
			t.Fatalf("reopen changed contents:\nbefore %v\nafter  %v", before, after)
		}
		if v, _ := s.Get(BucketMeta, []byte(KeyFSID)); string(v) != "fsid-1" {
			t.Fatalf("fsid %q", v)
		}
		// Still writable after reopen.
		mustApply(t, s, put(BucketPaxos, string(U64Key(2)), "v2"))
		if got := keysOf(t, s, BucketPaxos, nil); len(got) != 3 {
			t.Fatalf("keys after reopen and write: %q", got)
		}
	})
}

// KeyLastCommittedForTest mirrors paxos.KeyLastCommitted without importing paxos.
const KeyLastCommittedForTest = "last_committed"

func TestClosed(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s, put("kv", "a", "1"))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		if _, err := s.Get("kv", []byte("a")); !errors.Is(err, ErrClosed) {
			t.Fatalf("Get after close: %v", err)
		}
		if err := s.Apply(txn(put("kv", "a", "2"))); !errors.Is(err, ErrClosed) {
			t.Fatalf("Apply after close: %v", err)
		}
		if _, err := s.Export("", nil, 0, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("Export after close: %v", err)
		}
	})
}

func TestExportOrderAndBounds(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s,
			put("paxos", "b", "22"), put("paxos", "a", "1"), put("kv", "z", "3"),
			put("election", "epoch", "4"), put("meta", "fsid", "5"), put("kv", "m", "6"))
		want := []pair{
			{"election", "epoch", "4"}, {"kv", "m", "6"}, {"kv", "z", "3"},
			{"meta", "fsid", "5"}, {"paxos", "a", "1"}, {"paxos", "b", "22"},
		}
		if got := dump(t, s); !slices.Equal(got, want) {
			t.Fatalf("export order:\ngot  %v\nwant %v", got, want)
		}
		// Starting points: inside a bucket, between buckets, an absent bucket, past the end.
		starts := []struct {
			bucket, key string
			from        int
		}{
			{"kv", "n", 2}, {"kv", "", 1}, {"kv", "z", 2}, {"kv", "zz", 3}, {"ka", "zzz", 1},
			{"paxos", "b", 5}, {"paxos", "c", 6}, {"zzz", "", 6},
		}
		for _, st := range starts {
			c, err := s.Export(st.bucket, []byte(st.key), 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := pairsOf(c); !slices.Equal(got, want[st.from:]) || !c.GetDone() {
				t.Fatalf("from %s/%s: got %v done=%v, want %v", st.bucket, st.key, got, c.GetDone(), want[st.from:])
			}
		}
		// maxKeys=2: three chunks, each naming where the next starts.
		c, err := s.Export("", nil, 0, 2)
		if err != nil {
			t.Fatal(err)
		}
		if got := pairsOf(c); !slices.Equal(got, want[:2]) || c.GetDone() || c.GetNextBucket() != "kv" || string(c.GetNextKey()) != "z" {
			t.Fatalf("chunk 1: %v done=%v next=%s/%s", got, c.GetDone(), c.GetNextBucket(), c.GetNextKey())
		}
		// A pair larger than maxBytes still comes alone, so the export makes progress.
		c, err = s.Export("paxos", []byte("b"), 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := pairsOf(c); !slices.Equal(got, want[5:]) || !c.GetDone() {
			t.Fatalf("oversized pair: %v done=%v", got, c.GetDone())
		}
		// maxBytes counts bucket+key+value: "election"+"epoch"+"4" = 14, "kv"+"m"+"6" = 4.
		c, _ = s.Export("", nil, 18, 0)
		if got := pairsOf(c); !slices.Equal(got, want[:2]) {
			t.Fatalf("18 bytes: %v", got)
		}
		c, _ = s.Export("", nil, 17, 0)
		if got := pairsOf(c); !slices.Equal(got, want[:1]) {
			t.Fatalf("17 bytes: %v", got)
		}
		// Empty store: done at once, no pairs.
		e := im.open(t)
		c, err = e.Export("", nil, 10, 10)
		if err != nil || !c.GetDone() || len(c.GetPairs()) != 0 {
			t.Fatalf("empty export: %v %v", c, err)
		}
	})
}

// copyByChunks copies src into dst chunk by chunk, sending each chunk through the wire
// encoding, and returns the number of chunks.
func copyByChunks(t testing.TB, src, dst Store, maxBytes, maxKeys int) int {
	t.Helper()
	bucket, key := "", []byte(nil)
	for n := 1; ; n++ {
		c, err := src.Export(bucket, key, maxBytes, maxKeys)
		if err != nil {
			t.Fatal(err)
		}
		if maxKeys > 0 && len(c.GetPairs()) > maxKeys {
			t.Fatalf("chunk of %d pairs exceeds maxKeys %d", len(c.GetPairs()), maxKeys)
		}
		size := 0
		for _, p := range c.GetPairs() {
			size += PairSize(p.GetBucket(), p.GetKey(), p.GetValue())
		}
		if maxBytes > 0 && size > maxBytes && len(c.GetPairs()) > 1 {
			t.Fatalf("chunk of %d bytes in %d pairs exceeds maxBytes %d", size, len(c.GetPairs()), maxBytes)
		}
		if !c.GetDone() && len(c.GetPairs()) == 0 {
			t.Fatal("chunk without pairs is not done: no progress")
		}
		wire, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var got minimonv1.ExportChunk
		if err := proto.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		if err := dst.Import(&got); err != nil {
			t.Fatal(err)
		}
		if got.GetDone() {
			return n
		}
		bucket, key = got.GetNextBucket(), got.GetNextKey()
		if n > 100000 {
			t.Fatal("export does not end")
		}
	}
}

// fill writes a seeded mix of buckets, u64 keys and values of varied size (some larger than
// the chunk bounds used below).
func fill(t testing.TB, s Store, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	for range 5 {
		var ops []*minimonv1.StoreOp
		for range 40 {
			b := []string{BucketPaxos, BucketKV, BucketMonmap, BucketMeta, "x"}[rng.IntN(5)]
			k := U64Key(rng.Uint64N(1000))
			v := make([]byte, rng.IntN(300))
			for i := range v {
				v[i] = byte(rng.Uint32())
			}
			ops = append(ops, &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: b, Key: k, Value: v})
		}
		mustApply(t, s, ops...)
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	bounds := []struct{ maxBytes, maxKeys int }{{1, 0}, {100, 0}, {0, 1}, {0, 7}, {500, 3}, {0, 0}}
	for _, src := range impls() {
		for _, dst := range impls() {
			for _, b := range bounds {
				t.Run(fmt.Sprintf("%s-to-%s/bytes=%d,keys=%d", src.name, dst.name, b.maxBytes, b.maxKeys), func(t *testing.T) {
					s, d := src.open(t), dst.open(t)
					fill(t, s, 42)
					want := dump(t, s)
					n := copyByChunks(t, s, d, b.maxBytes, b.maxKeys)
					if got := dump(t, d); !slices.Equal(got, want) {
						t.Fatalf("copy differs from original (%d vs %d pairs)", len(got), len(want))
					}
					ss, _ := s.Sizes()
					ds, _ := d.Sizes()
					if fmt.Sprint(ss) != fmt.Sprint(ds) {
						t.Fatalf("sizes differ: %v vs %v", ss, ds)
					}
					if b.maxKeys == 1 && n != len(want) {
						t.Fatalf("maxKeys=1 took %d chunks for %d pairs", n, len(want))
					}
				})
			}
		}
	}
}

func TestImportValidation(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s, put("kv", "a", "1"))
		before := dump(t, s)
		bad := &minimonv1.ExportChunk{Pairs: []*minimonv1.ExportChunk_Pair{
			{Bucket: "kv", Key: []byte("b"), Value: []byte("2")},
			{Bucket: "", Key: []byte("c"), Value: []byte("3")},
		}}
		if err := s.Import(bad); !errors.Is(err, ErrInvalidChunk) {
			t.Fatalf("bad chunk: %v", err)
		}
		bad.Pairs[1] = &minimonv1.ExportChunk_Pair{Bucket: "kv"}
		if err := s.Import(bad); !errors.Is(err, ErrInvalidChunk) {
			t.Fatalf("empty key: %v", err)
		}
		if err := s.Import(nil); !errors.Is(err, ErrInvalidChunk) {
			t.Fatalf("nil chunk: %v", err)
		}
		if after := dump(t, s); !slices.Equal(before, after) {
			t.Fatalf("rejected chunk changed the store: %v", after)
		}
	})
}

func TestMemClone(t *testing.T) {
	m := NewMem()
	mustApply(t, m, put("kv", "a", "1"), put("kv", "b", "2"))
	c := m.Clone()
	mustApply(t, m, put("kv", "a", "changed"), erase("kv", "b"), put("kv", "c", "3"))
	mustApply(t, c, put("other", "x", "y"))
	if got, want := dump(t, c), []pair{{"kv", "a", "1"}, {"kv", "b", "2"}, {"other", "x", "y"}}; !slices.Equal(got, want) {
		t.Fatalf("clone %v, want %v", got, want)
	}
	if got, want := dump(t, m), []pair{{"kv", "a", "changed"}, {"kv", "c", "3"}}; !slices.Equal(got, want) {
		t.Fatalf("original %v, want %v", got, want)
	}
}

func TestU64Key(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 1 << 40, ^uint64(0)} {
		k := U64Key(v)
		if len(k) != 8 {
			t.Fatalf("U64Key(%d) has %d bytes", v, len(k))
		}
		got, err := ParseU64Key(k)
		if err != nil || got != v {
			t.Fatalf("ParseU64Key(U64Key(%d)) = %d, %v", v, got, err)
		}
	}
	if !bytes.Equal(U64Key(0x0102030405060708), []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatal("not big-endian")
	}
	if bytes.Compare(U64Key(255), U64Key(256)) >= 0 {
		t.Fatal("byte order differs from numeric order")
	}
	for _, b := range [][]byte{nil, {1}, make([]byte, 9)} {
		if _, err := ParseU64Key(b); err == nil {
			t.Fatalf("ParseU64Key(%x) accepted", b)
		}
	}
}

func TestSchema(t *testing.T) {
	b := Buckets()
	if !slices.IsSorted(b) || len(b) != 7 {
		t.Fatalf("Buckets() = %v", b)
	}
	for _, name := range append(ServiceBuckets(), BucketPaxos, BucketElection, BucketMeta, BucketDedup) {
		if !slices.Contains(b, name) {
			t.Fatalf("%s missing from Buckets()", name)
		}
	}
	b[0] = "mutated"
	if Buckets()[0] == "mutated" {
		t.Fatal("Buckets() shares its slice")
	}
}

func TestClearTransaction(t *testing.T) {
	forEachImpl(t, func(t *testing.T, im impl) {
		s := im.open(t)
		mustApply(t, s, put(BucketMeta, KeySyncInProgress, "1"), put(BucketPaxos, "a", "1"), put(BucketKV, "b", "2"))
		tx, err := ClearTransaction(s, BucketMeta)
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, s, tx.GetOps()...)
		if got, want := dump(t, s), []pair{{BucketMeta, KeySyncInProgress, "1"}}; !slices.Equal(got, want) {
			t.Fatalf("after clear: %v, want %v", got, want)
		}
	})
}
