package services

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// mons renders a map as "rank:name@addr ..." for compact assertions.
func mons(mm *minimonv1.MonMap) string {
	var parts []string
	for _, mi := range mm.GetMons() {
		parts = append(parts, fmt.Sprintf("%d:%s@%s", mi.GetRank(), mi.GetName(), mi.GetAddr()))
	}
	return strings.Join(parts, " ")
}

// newCluster commits epoch 1 with members c, a, b (given out of order on purpose).
func newCluster(t *testing.T) (*kvstore.Mem, *Monmap) {
	t.Helper()
	st := kvstore.NewMem()
	m := NewMonmap()
	if err := m.Refresh(st); err != nil {
		t.Fatal(err)
	}
	if m.Current() != nil || m.Epoch() != 0 {
		t.Fatal("fresh store has a monmap")
	}
	u := must(t)(m.CreateInitial("fsid-1", []Member{
		{"c", "10.0.0.3:6789"}, {"a", "10.0.0.1:6789"}, {"b", "10.0.0.2:6789"},
	}))
	commit(t, st, []Service{m}, u)
	return st, m
}

func TestMonmapCreateInitial(t *testing.T) {
	st, m := newCluster(t)
	if m.Epoch() != 1 {
		t.Fatalf("epoch %d", m.Epoch())
	}
	want := "0:a@10.0.0.1:6789 1:b@10.0.0.2:6789 2:c@10.0.0.3:6789"
	if got := mons(m.Current()); got != want {
		t.Fatalf("ranks %q, want %q (name order)", got, want)
	}
	latest, err := m.Latest(st)
	if err != nil || !proto.Equal(latest, m.Current()) || latest.GetFsid() != "fsid-1" {
		t.Fatalf("Latest = %v, %v", latest, err)
	}
	if v, _ := st.Get(kvstore.BucketMonmap, []byte(KeyFirstCommitted)); v == nil {
		t.Error("first_committed not written")
	}
	// A second create is refused.
	if _, err := m.CreateInitial("fsid-2", []Member{{"a", "10.0.0.1:1"}}); !errors.Is(err, ErrExists) {
		t.Errorf("second CreateInitial: %v", err)
	}
	// Current is a copy.
	m.Current().Mons[0].Name = "zzz"
	if m.Current().GetMons()[0].GetName() != "a" {
		t.Error("Current leaks the live map")
	}
}

func TestMonmapCreateInitialValidation(t *testing.T) {
	ok := Member{"a", "10.0.0.1:6789"}
	tests := []struct {
		name    string
		fsid    string
		members []Member
		msg     string
	}{
		{"no fsid", "", []Member{ok}, "fsid is empty"},
		{"no members", "f", nil, "no initial members"},
		{"empty name", "f", []Member{{"", "10.0.0.1:1"}}, "name is empty"},
		{"bad name", "f", []Member{{"a b", "10.0.0.1:1"}}, "only letters"},
		{"long name", "f", []Member{{strings.Repeat("a", MaxMonName+1), "10.0.0.1:1"}}, "exceeds"},
		{"no port", "f", []Member{{"a", "10.0.0.1"}}, "want host:port"},
		{"port 0", "f", []Member{{"a", "10.0.0.1:0"}}, "port must be"},
		{"port big", "f", []Member{{"a", "10.0.0.1:65536"}}, "port must be"},
		{"port name", "f", []Member{{"a", "10.0.0.1:http"}}, "port must be"},
		{"no host", "f", []Member{{"a", ":6789"}}, "bad host"},
		{"non-ascii host", "f", []Member{{"a", "\x92:1"}}, "bad host"},
		{"space in host", "f", []Member{{"a", "h x:1"}}, "bad host"},
		{"wildcard v4", "f", []Member{{"a", "0.0.0.0:6789"}}, "wildcard"},
		{"wildcard v6", "f", []Member{{"a", "[::]:6789"}}, "wildcard"},
		{"bad fsid", "f\xff", []Member{ok}, "printable ASCII"},
		{"dup name", "f", []Member{ok, {"a", "10.0.0.2:6789"}}, "listed twice"},
		{"dup addr", "f", []Member{ok, {"b", "10.0.0.1:6789"}}, "same address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMonmap()
			u, err := m.CreateInitial(tc.fsid, tc.members)
			if !errors.Is(err, ErrInvalid) || GRPCCode(err) != codes.InvalidArgument {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.msg) || len(u.Ops) != 0 {
				t.Errorf("err %q lacks %q, or ops %d", err, tc.msg, len(u.Ops))
			}
			// Nothing was staged: a valid create still works.
			if _, err := m.CreateInitial("f", []Member{ok}); err != nil {
				t.Errorf("valid create after refusal: %v", err)
			}
		})
	}
}

func TestMonmapAdd(t *testing.T) {
	st, m := newCluster(t)
	svcs := []Service{m}

	u := must(t)(m.Add("d", "10.0.0.4:6789"))
	if len(u.Ops) == 0 || u.Message != "adding mon.d at 10.0.0.4:6789" {
		t.Fatalf("Add: %+v", u)
	}
	if m.Epoch() != 1 {
		t.Fatal("staged add changed the committed epoch")
	}
	commit(t, st, svcs, u)
	if m.Epoch() != 2 {
		t.Fatalf("epoch %d after add", m.Epoch())
	}
	if got, want := mons(m.Current()), "0:a@10.0.0.1:6789 1:b@10.0.0.2:6789 2:c@10.0.0.3:6789 3:d@10.0.0.4:6789"; got != want {
		t.Fatalf("after add %q, want %q", got, want)
	}

	// Idempotent: the same name and address stage nothing.
	u = must(t)(m.Add("d", "10.0.0.4:6789"))
	if len(u.Ops) != 0 || !strings.Contains(u.Message, "already exists") {
		t.Fatalf("re-add: %+v", u)
	}

	clash := []struct{ name, addr, msg string }{
		{"d", "10.0.0.9:6789", "mon.d already exists at address 10.0.0.4:6789"},
		{"e", "10.0.0.1:6789", "address 10.0.0.1:6789 already in use by mon.a"},
	}
	for _, c := range clash {
		u, err := m.Add(c.name, c.addr)
		if !errors.Is(err, ErrExists) || GRPCCode(err) != codes.AlreadyExists || err.Error() != c.msg || len(u.Ops) != 0 {
			t.Errorf("Add(%s, %s) = %+v, %v; want %q", c.name, c.addr, u, err, c.msg)
		}
	}
	for _, bad := range [][2]string{{"", "10.0.0.5:1"}, {"e/f", "10.0.0.5:1"}, {"e", "nope"}} {
		if _, err := m.Add(bad[0], bad[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%q, %q): %v", bad[0], bad[1], err)
		}
	}
	// Nothing refused above was staged: the next add is epoch 3 with one new member.
	commit(t, st, svcs, must(t)(m.Add("e", "10.0.0.5:6789")))
	if m.Epoch() != 3 || len(m.Current().GetMons()) != 5 {
		t.Fatalf("epoch %d mons %q", m.Epoch(), mons(m.Current()))
	}
}

func TestMonmapAddBeforeCreate(t *testing.T) {
	m := NewMonmap()
	if err := m.Refresh(kvstore.NewMem()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add("a", "10.0.0.1:1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Add without a map: %v", err)
	}
	if _, err := m.Remove("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Remove without a map: %v", err)
	}
}

func TestMonmapRemove(t *testing.T) {
	st, m := newCluster(t)
	svcs := []Service{m}

	u := must(t)(m.Remove("a"))
	if u.Message != "removing mon.a at 10.0.0.1:6789, there will be 2 monitors" {
		t.Fatalf("message %q", u.Message)
	}
	commit(t, st, svcs, u)
	if got, want := mons(m.Current()), "0:b@10.0.0.2:6789 1:c@10.0.0.3:6789"; got != want || m.Epoch() != 2 {
		t.Fatalf("after remove e%d %q, want %q (ranks shift down)", m.Epoch(), got, want)
	}

	// Absent: no ops, Ceph's message.
	u = must(t)(m.Remove("a"))
	if len(u.Ops) != 0 || u.Message != "mon.a does not exist or has already been removed" {
		t.Fatalf("remove absent: %+v", u)
	}
	if _, err := m.Remove("bad name"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}

	commit(t, st, svcs, must(t)(m.Remove("c")))
	u, err := m.Remove("b")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "last monitor") || len(u.Ops) != 0 {
		t.Fatalf("remove last: %+v, %v", u, err)
	}
	if m.Epoch() != 3 || mons(m.Current()) != "0:b@10.0.0.2:6789" {
		t.Fatalf("e%d %q", m.Epoch(), mons(m.Current()))
	}
}

// Two writes staged before one commit build on each other and land in one epoch.
func TestMonmapBatchedWrites(t *testing.T) {
	st, m := newCluster(t)
	u1 := must(t)(m.Add("d", "10.0.0.4:6789"))
	u2 := must(t)(m.Remove("a"))
	// The pending map already holds d: adding it again is a no-op, taking its address a clash.
	if u := must(t)(m.Add("d", "10.0.0.4:6789")); len(u.Ops) != 0 {
		t.Fatal("re-add of a staged member staged ops")
	}
	if _, err := m.Add("x", "10.0.0.4:6789"); !errors.Is(err, ErrExists) {
		t.Fatalf("clash with a staged member: %v", err)
	}
	// A commit of another service keeps the pending map.
	commit(t, st, []Service{m}, must(t)(NewKV(KVOptions{}).Set("k", nil)))
	commit(t, st, []Service{m}, u1, u2)
	if got, want := mons(m.Current()), "0:b@10.0.0.2:6789 1:c@10.0.0.3:6789 2:d@10.0.0.4:6789"; got != want || m.Epoch() != 2 {
		t.Fatalf("e%d %q, want e2 %q", m.Epoch(), got, want)
	}
	// The pending map went with its commit: the next write starts from epoch 2.
	commit(t, st, []Service{m}, must(t)(m.Add("e", "10.0.0.5:6789")))
	if m.Epoch() != 3 {
		t.Fatalf("epoch %d", m.Epoch())
	}

	// Discard drops a staged change.
	must(t)(m.Add("f", "10.0.0.6:6789"))
	m.Discard()
	if u := must(t)(m.Add("g", "10.0.0.7:6789")); len(u.Ops) == 0 {
		t.Fatal("no ops")
	} else {
		commit(t, st, []Service{m}, u)
	}
	if got := mons(m.Current()); strings.Contains(got, "f@") || !strings.Contains(got, "g@") || m.Epoch() != 4 {
		t.Fatalf("after discard e%d %q", m.Epoch(), got)
	}
}

func TestMonmapAtEpoch(t *testing.T) {
	st, m := newCluster(t)
	commit(t, st, []Service{m}, must(t)(m.Add("d", "10.0.0.4:6789")))
	commit(t, st, []Service{m}, must(t)(m.Remove("b")))

	wantByEpoch := map[uint64]string{
		1: "0:a@10.0.0.1:6789 1:b@10.0.0.2:6789 2:c@10.0.0.3:6789",
		2: "0:a@10.0.0.1:6789 1:b@10.0.0.2:6789 2:c@10.0.0.3:6789 3:d@10.0.0.4:6789",
		3: "0:a@10.0.0.1:6789 1:c@10.0.0.3:6789 2:d@10.0.0.4:6789",
	}
	for e, want := range wantByEpoch {
		mm, err := m.At(st, e)
		if err != nil || mm.GetEpoch() != e || mons(mm) != want || mm.GetFsid() != "fsid-1" {
			t.Errorf("At(%d) = e%d %q, %v; want %q", e, mm.GetEpoch(), mons(mm), err, want)
		}
	}
	for _, e := range []uint64{0, 4, 1 << 63} {
		_, err := m.At(st, e)
		if !errors.Is(err, ErrNotFound) || GRPCCode(err) != codes.NotFound {
			t.Errorf("At(%d): %v, want ErrNotFound", e, err)
		}
	}
	if _, err := m.Latest(kvstore.NewMem()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Latest on empty store: %v", err)
	}
}

func TestMonmapCorruptStore(t *testing.T) {
	st := kvstore.NewMem()
	bad := &minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		put(kvstore.BucketMonmap, []byte(KeyLastCommitted), []byte("short")),
	}}
	if err := st.Apply(bad); err != nil {
		t.Fatal(err)
	}
	m := NewMonmap()
	if err := m.Refresh(st); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Refresh of a bad last_committed: %v", err)
	}
	// An epoch key holding garbage, or another epoch's map.
	other, _ := proto.Marshal(&minimonv1.MonMap{Epoch: 7})
	bad = &minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
		put(kvstore.BucketMonmap, []byte(KeyLastCommitted), kvstore.U64Key(1)),
		put(kvstore.BucketMonmap, kvstore.U64Key(1), []byte{0xff, 0xff, 0xff}),
		put(kvstore.BucketMonmap, kvstore.U64Key(2), other),
	}}
	if err := st.Apply(bad); err != nil {
		t.Fatal(err)
	}
	for _, e := range []uint64{1, 2} {
		if _, err := m.At(st, e); err == nil || GRPCCode(err) != codes.Internal {
			t.Errorf("At(%d) of a corrupt map: %v", e, err)
		}
	}
}

func TestMonmapTimestamps(t *testing.T) {
	st := kvstore.NewMem()
	now := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	m := NewMonmap()
	m.Now = func() time.Time { return now }
	commit(t, st, []Service{m}, must(t)(m.CreateInitial("f", []Member{{"a", "h:1"}})))
	now = now.Add(time.Hour)
	commit(t, st, []Service{m}, must(t)(m.Add("b", "h:2")))
	mm := m.Current()
	if mm.GetCreated() != "2026-08-01T12:00:00Z" || mm.GetModified() != "2026-08-01T13:00:00Z" {
		t.Fatalf("created %q modified %q", mm.GetCreated(), mm.GetModified())
	}
}

func TestIsMonmapChange(t *testing.T) {
	m := NewMonmap()
	create := must(t)(m.CreateInitial("f", []Member{{"a", "h:1"}}))
	kvSet := must(t)(NewKV(KVOptions{}).Set("last_committed", []byte("x")))
	enc := func(ops ...*minimonv1.StoreOp) []byte {
		b, err := Encode(Merge(ops))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	encU := func(us ...Update) []byte {
		var ops []*minimonv1.StoreOp
		for _, u := range us {
			ops = append(ops, u.Ops...)
		}
		return enc(ops...)
	}
	rng := func(start, end string) *minimonv1.StoreOp {
		return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_ERASE_RANGE, Bucket: kvstore.BucketMonmap,
			Key: []byte(start), End: []byte(end)}
	}
	tests := []struct {
		name  string
		value []byte
		want  bool
	}{
		{"create", encU(create), true},
		{"kv with a monmap-like key", encU(kvSet), false},
		{"kv then create", encU(kvSet, create), true},
		{"empty", enc(), false},
		{"nil value", nil, false},
		{"garbage", []byte{0xff, 0x01, 0x02}, false},
		{"monmap epoch only", enc(put(kvstore.BucketMonmap, kvstore.U64Key(9), []byte("x"))), false},
		{"monmap first_committed", enc(put(kvstore.BucketMonmap, []byte(KeyFirstCommitted), kvstore.U64Key(1))), false},
		{"erase last_committed", enc(erase(kvstore.BucketMonmap, []byte(KeyLastCommitted))), true},
		{"range covering", enc(rng("a", "m")), true},
		{"range to end", enc(rng("", "")), true},
		{"range before", enc(rng("a", "last_committed")), false},
		{"range after", enc(rng("last_committed\x00", "")), false},
	}
	for _, tc := range tests {
		if got := IsMonmapChange(tc.value); got != tc.want {
			t.Errorf("%s: IsMonmapChange = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Every monmap write is a change.
	_, mm := newCluster(t)
	for _, u := range []Update{must(t)(mm.Add("d", "h:4")), must(t)(mm.Remove("a"))} {
		if !IsMonmapChange(encU(u)) {
			t.Error("staged monmap write is not a monmap change")
		}
	}
}

func FuzzIsMonmapChange(f *testing.F) {
	b, _ := Encode(Merge([]*minimonv1.StoreOp{put(kvstore.BucketMonmap, []byte(KeyLastCommitted), kvstore.U64Key(1))}))
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, value []byte) {
		_ = IsMonmapChange(value)
	})
}

func FuzzMonmapAddRemove(f *testing.F) {
	f.Add("d", "10.0.0.4:6789", "a")
	f.Add("", ":", "")
	f.Fuzz(func(t *testing.T, name, addr, rm string) {
		st := kvstore.NewMem()
		m := NewMonmap()
		u, err := m.CreateInitial("f", []Member{{"a", "10.0.0.1:1"}, {"b", "10.0.0.2:1"}})
		if err != nil {
			t.Fatal(err)
		}
		commit(t, st, []Service{m}, u)
		var ups []Update
		if u, err := m.Add(name, addr); err == nil {
			ups = append(ups, u)
		} else if GRPCCode(err) == codes.Internal {
			t.Fatal(err)
		}
		if u, err := m.Remove(rm); err == nil {
			ups = append(ups, u)
		} else if GRPCCode(err) == codes.Internal {
			t.Fatal(err)
		}
		commit(t, st, []Service{m}, ups...)
		// Invariants: ranks are 0..n-1, names and addresses unique, at least one monitor.
		cur := m.Current()
		if len(cur.GetMons()) == 0 {
			t.Fatal("no monitors left")
		}
		var names, addrs []string
		for i, mi := range cur.GetMons() {
			if mi.GetRank() != int32(i) {
				t.Fatalf("rank %d at index %d", mi.GetRank(), i)
			}
			names, addrs = append(names, mi.GetName()), append(addrs, mi.GetAddr())
		}
		slices.Sort(names)
		slices.Sort(addrs)
		if len(slices.Compact(names)) != len(cur.GetMons()) || len(slices.Compact(addrs)) != len(cur.GetMons()) {
			t.Fatalf("duplicates in %q", mons(cur))
		}
	})
}
