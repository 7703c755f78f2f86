package sim

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The checkers must be able to fail: feed them fabricated bad histories.
func TestCheckerSelfTest(t *testing.T) {
	t.Run("two values at one version", func(t *testing.T) {
		c := NewChecker(nil)
		c.Commit(0, 5, []byte("a"))
		c.Commit(1, 5, []byte("a"))
		if err := c.Err(); err != nil {
			t.Fatalf("same value flagged: %v", err)
		}
		c.Commit(2, 5, []byte("b"))
		if c.Err() == nil {
			t.Fatal("two values at version 5 not detected")
		}
	})
	t.Run("last_committed going back", func(t *testing.T) {
		c := NewChecker(nil)
		c.LastCommitted(0, 7)
		c.LastCommitted(0, 7)
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
		c.LastCommitted(0, 6)
		if c.Err() == nil {
			t.Fatal("last_committed decrease not detected")
		}
	})
	t.Run("two leaders in one epoch", func(t *testing.T) {
		c := NewChecker(nil)
		c.Leader(4, 0)
		c.Leader(4, 0)
		c.Leader(6, 1)
		if c.Err() != nil {
			t.Fatal(c.Err())
		}
		c.Leader(6, 2)
		if c.Err() == nil {
			t.Fatal("two leaders not detected")
		}
	})
	put := func(client int, key, val string, ver uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: OpInput{Kind: OpPut, Key: key, Value: val},
			Output: OpOutput{Version: ver}, Call: call, Return: ret}
	}
	get := func(client int, key, val string, ver uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: OpInput{Kind: OpGet, Key: key},
			Output: OpOutput{Value: val, Version: ver}, Call: call, Return: ret}
	}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"good", []porcupine.Operation{
			put(0, "k", "a", 2, 0, 10), get(1, "k", "a", 2, 11, 12),
			put(0, "k", "b", 3, 13, 20), get(1, "k", "b", 4, 21, 22), get(2, "x", "", 4, 0, 30),
		}, porcupine.Ok},
		{"stale read", []porcupine.Operation{
			put(0, "k", "a", 2, 0, 10), put(0, "k", "b", 3, 11, 20), get(1, "k", "a", 3, 21, 22),
		}, porcupine.Illegal},
		{"stale read with old version", []porcupine.Operation{
			put(0, "k", "a", 2, 0, 10), put(0, "k", "b", 3, 11, 20), get(1, "k", "a", 2, 21, 22),
		}, porcupine.Illegal},
		{"version going back", []porcupine.Operation{
			get(1, "k", "", 5, 0, 1), get(1, "k", "", 4, 2, 3),
		}, porcupine.Illegal},
		{"unknown write seen later", []porcupine.Operation{
			{ClientId: 0, Input: OpInput{Kind: OpPut, Key: "k", Value: "u"}, Output: OpOutput{Unknown: true}, Call: 0, Return: 1 << 62},
			get(1, "k", "u", 3, 5, 6),
		}, porcupine.Ok},
		{"concurrent read may see either", []porcupine.Operation{
			put(0, "k", "a", 2, 0, 10), get(1, "k", "", 1, 1, 2),
		}, porcupine.Ok},
	}
	for _, tc := range cases {
		res, _ := CheckLinearizable(tc.ops, 10*time.Second)
		if res != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, res, tc.want)
		}
	}
}

// Unknown puts nobody read are dropped; one that a read saw is kept, so a stale read after it
// is still caught.
func TestPruneUnobserved(t *testing.T) {
	var h History
	h.Add(0, OpInput{Kind: OpPut, Key: "k", Value: "a"}, OpOutput{Unknown: true}, 0, 0)
	h.Add(1, OpInput{Kind: OpPut, Key: "k", Value: "b"}, OpOutput{Unknown: true}, 1, 0)
	h.Add(2, OpInput{Kind: OpGet, Key: "k"}, OpOutput{Value: "b"}, 2, 3)
	h.Add(3, OpInput{Kind: OpGet, Key: "k"}, OpOutput{Value: ""}, 4, 5)
	got := pruneUnobserved(h.Operations())
	if len(got) != 3 || got[0].Input.(OpInput).Value != "b" {
		t.Fatalf("pruned %v", got)
	}
	if res, _ := CheckLinearizable(h.Operations(), time.Second); res != porcupine.Illegal {
		t.Fatalf("stale read after an observed unknown put: %v, want Illegal", res)
	}
}
