package services

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"google.golang.org/grpc/codes"
)

// commit does what the shell and the paxos core do with staged updates: merge them into one
// value, encode, decode (as a peon would), apply to the store and refresh the services.
func commit(t *testing.T, st kvstore.Store, svcs []Service, ups ...Update) {
	t.Helper()
	var ops [][]*minimonv1.StoreOp
	for _, u := range ups {
		ops = append(ops, u.Ops)
	}
	b, err := Encode(Merge(ops...))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(tx); err != nil {
		t.Fatalf("apply: %v", err)
	}
	for _, s := range svcs {
		if err := s.Refresh(st); err != nil {
			t.Fatalf("refresh %s: %v", s.Name(), err)
		}
	}
}

// must(t)(svc.Cmd(...)) fails the test on an error and returns the update.
func must(t *testing.T) func(Update, error) Update {
	return func(u Update, err error) Update {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
}

func TestKVValidation(t *testing.T) {
	kv := NewKV(KVOptions{})
	tests := []struct {
		name  string
		key   string
		value []byte
		want  error
		code  codes.Code
		msg   string // substring of the message
	}{
		{"empty key", "", nil, ErrInvalid, codes.InvalidArgument, "key is empty"},
		{"long key", strings.Repeat("k", MaxKeyLen+1), nil, ErrInvalid, codes.InvalidArgument, "exceeds 1024"},
		{"nul", "a\x00b", nil, ErrInvalid, codes.InvalidArgument, "control character"},
		{"newline", "a\nb", nil, ErrInvalid, codes.InvalidArgument, "control character"},
		{"escape", "a\x1b[2J", nil, ErrInvalid, codes.InvalidArgument, "control character"},
		{"del", "a\x7f", nil, ErrInvalid, codes.InvalidArgument, "control character"},
		{"c1", "a\u0085", nil, ErrInvalid, codes.InvalidArgument, "control character"},
		{"bad utf8", "a\xffb", nil, ErrInvalid, codes.InvalidArgument, "UTF-8"},
		{"too big", "k", make([]byte, 70000), ErrTooBig, codes.ResourceExhausted,
			"value of 70000 bytes exceeds mon_config_key_max_entry_size 65536"},
		{"just over", "k", make([]byte, DefaultMaxEntrySize+1), ErrTooBig, codes.ResourceExhausted, "65537 bytes"},
		{"at limit", "k", make([]byte, DefaultMaxEntrySize), nil, codes.OK, ""},
		{"max key", strings.Repeat("k", MaxKeyLen), []byte("v"), nil, codes.OK, ""},
		{"unicode and spaces", "mgr/dash board/ключ", []byte("v"), nil, codes.OK, ""},
		{"empty value", "k", nil, nil, codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := kv.Set(tc.key, tc.value)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Set: err %v, want %v", err, tc.want)
			}
			if got := GRPCCode(err); got != tc.code {
				t.Errorf("code %v, want %v", got, tc.code)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("message %q lacks %q", err.Error(), tc.msg)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("message %q is not one line", err.Error())
				}
				if len(u.Ops) != 0 {
					t.Errorf("refused write staged %d ops", len(u.Ops))
				}
				return
			}
			if len(u.Ops) != 1 || u.Message != "set "+tc.key {
				t.Errorf("update %+v", u)
			}
		})
	}
	// The same key checks guard rm, get and exists.
	st := kvstore.NewMem()
	if _, err := kv.Rm(st, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Rm empty key: %v", err)
	}
	if _, err := kv.Get(st, "a\x00"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Get NUL key: %v", err)
	}
	if _, err := kv.Exists(st, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Exists empty key: %v", err)
	}
}

func TestKVMaxEntrySizeOption(t *testing.T) {
	kv := NewKV(KVOptions{MaxEntrySize: 10})
	if _, err := kv.Set("k", make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	_, err := kv.Set("k", make([]byte, 11))
	if !errors.Is(err, ErrTooBig) || err.Error() != "value of 11 bytes exceeds mon_config_key_max_entry_size 10" {
		t.Fatalf("err %v", err)
	}
}

func TestKVSetGetRmExists(t *testing.T) {
	st := kvstore.NewMem()
	kv := NewKV(KVOptions{})
	svcs := []Service{kv}

	if _, err := kv.Get(st, "a"); !errors.Is(err, ErrNotFound) || GRPCCode(err) != codes.NotFound {
		t.Fatalf("Get absent: %v", err)
	}
	val := []byte("hello")
	u := must(t)(kv.Set("a", val))
	val[0] = 'X' // the staged op owns its bytes
	if ok, _ := kv.Exists(st, "a"); ok {
		t.Fatal("staged write visible before commit")
	}
	commit(t, st, svcs, u, must(t)(kv.Set("empty", nil)))

	if v, err := kv.Get(st, "a"); err != nil || string(v) != "hello" {
		t.Fatalf("Get a = %q, %v", v, err)
	}
	if v, err := kv.Get(st, "empty"); err != nil || len(v) != 0 {
		t.Fatalf("Get empty = %q, %v", v, err)
	}
	for key, want := range map[string]bool{"a": true, "empty": true, "b": false} {
		if ok, err := kv.Exists(st, key); err != nil || ok != want {
			t.Errorf("Exists(%s) = %v, %v; want %v", key, ok, err, want)
		}
	}

	// Overwrite, then remove.
	commit(t, st, svcs, must(t)(kv.Set("a", []byte("v2"))))
	if v, _ := kv.Get(st, "a"); string(v) != "v2" {
		t.Fatalf("after overwrite %q", v)
	}
	u = must(t)(kv.Rm(st, "a"))
	if u.Message != "key deleted" || len(u.Ops) != 1 {
		t.Fatalf("Rm present: %+v", u)
	}
	commit(t, st, svcs, u)
	if ok, _ := kv.Exists(st, "a"); ok {
		t.Fatal("a still exists after rm")
	}
	// Removing an absent key succeeds and says so.
	u = must(t)(kv.Rm(st, "a"))
	if !strings.Contains(u.Message, "does not exist") {
		t.Fatalf("Rm absent message %q", u.Message)
	}
	commit(t, st, svcs, u)

	// Set then rm in one value: the client's order wins.
	commit(t, st, svcs, must(t)(kv.Set("c", []byte("x"))), must(t)(kv.Rm(st, "c")))
	if ok, _ := kv.Exists(st, "c"); ok {
		t.Fatal("set+rm in one value left the key")
	}
}

func TestKVList(t *testing.T) {
	st := kvstore.NewMem()
	kv := NewKV(KVOptions{MaxListKeys: 5})
	keys := []string{"mgr/b", "mgr/a", "mgr", "mgs", "mg", "osd/1", "mgr/c/d", "a"}
	var ups []Update
	for _, k := range keys {
		ups = append(ups, must(t)(kv.Set(k, []byte(k))))
	}
	commit(t, st, []Service{kv}, ups...)

	tests := []struct {
		prefix    string
		limit     int
		want      []string
		truncated bool
	}{
		{"mgr/", 0, []string{"mgr/a", "mgr/b", "mgr/c/d"}, false},
		{"mgr/", 3, []string{"mgr/a", "mgr/b", "mgr/c/d"}, false},
		{"mgr/", 2, []string{"mgr/a", "mgr/b"}, true},
		{"mgr", 0, []string{"mgr", "mgr/a", "mgr/b", "mgr/c/d"}, false},
		{"m", 0, []string{"mg", "mgr", "mgr/a", "mgr/b", "mgr/c/d"}, true}, // server max 5, 6 match
		{"m", 100, []string{"mg", "mgr", "mgr/a", "mgr/b", "mgr/c/d"}, true},
		{"", 1, []string{"a"}, true},
		{"zzz", 0, []string{}, false},
		{"osd/1", 1, []string{"osd/1"}, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q/%d", tc.prefix, tc.limit), func(t *testing.T) {
			got, trunc, err := kv.List(st, tc.prefix, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) || trunc != tc.truncated {
				t.Errorf("List = %q truncated=%v, want %q truncated=%v", got, trunc, tc.want, tc.truncated)
			}
		})
	}
	all, _, err := NewKV(KVOptions{}).List(st, "", 0)
	if err != nil || !slices.IsSorted(all) || len(all) != len(keys) {
		t.Fatalf("List all = %q, %v", all, err)
	}
}

func TestMergeKeepsOrder(t *testing.T) {
	a := []*minimonv1.StoreOp{put("x", []byte("1"), []byte("a"))}
	b := []*minimonv1.StoreOp{put("x", []byte("1"), []byte("b")), erase("x", []byte("2"))}
	tx := Merge(a, nil, b)
	if len(tx.GetOps()) != 3 || !bytes.Equal(tx.GetOps()[1].GetValue(), []byte("b")) {
		t.Fatalf("Merge = %v", tx)
	}
	if len(Merge().GetOps()) != 0 {
		t.Fatal("empty Merge has ops")
	}
	if _, err := Decode([]byte{0xff, 0xff}); err == nil {
		t.Fatal("Decode of garbage succeeded")
	}
}

func FuzzKVSet(f *testing.F) {
	f.Add("mgr/x", []byte("v"))
	f.Add("", []byte{})
	f.Add("a\x00", []byte{0})
	f.Add("\xff\xfe", make([]byte, 100))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		st := kvstore.NewMem()
		kv := NewKV(KVOptions{MaxEntrySize: 64})
		u, err := kv.Set(key, value)
		if err != nil {
			if len(u.Ops) != 0 || GRPCCode(err) == codes.Internal {
				t.Fatalf("refused with ops or internal code: %v", err)
			}
			return
		}
		commit(t, st, []Service{kv}, u)
		v, err := kv.Get(st, key)
		if err != nil || !bytes.Equal(v, value) {
			t.Fatalf("Get = %q, %v; want %q", v, err, value)
		}
		keys, _, err := kv.List(st, key, 0)
		if err != nil || len(keys) != 1 || keys[0] != key {
			t.Fatalf("List = %q, %v", keys, err)
		}
		u = must(t)(kv.Rm(st, key))
		commit(t, st, []Service{kv}, u)
		if ok, err := kv.Exists(st, key); ok || err != nil {
			t.Fatalf("Exists after rm = %v, %v", ok, err)
		}
	})
}
