package sim

import (
	"fmt"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// OpKind is a client operation kind in the linearizability history.
type OpKind int

// Operation kinds.
const (
	OpGet OpKind = iota
	OpPut
)

// OpInput is the input of one client operation on a register (one key).
type OpInput struct {
	Kind  OpKind
	Key   string
	Value string // Put only
}

// OpOutput is the observed result. Version is the Paxos version the monitor reported (the
// value's version for a put, last_committed for a read). Unknown marks a write whose outcome
// is not known (step-down, crash, timeout): it may or may not have been applied.
type OpOutput struct {
	Value   string
	Version uint64
	Unknown bool
	// NoVersion marks a read whose reply carries no version (the kv service's Get): only its
	// value is checked, and the version bound stays as it was. The simulator never sets it.
	NoVersion bool
}

type regState struct {
	Value   string
	Version uint64 // lower bound for later operations
}

// KVModel is a per-key register with Paxos versions (testing.md 2.4). One Paxos value may carry
// several puts, so two puts may report the same version; a read at version v has seen every
// commit up to v.
var KVModel = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() any { return regState{} },
	Step: func(s, in, out any) (bool, any) {
		st, i, o := s.(regState), in.(OpInput), out.(OpOutput)
		switch i.Kind {
		case OpGet:
			if o.NoVersion {
				return o.Value == st.Value, st
			}
			if o.Value != st.Value || o.Version < st.Version {
				return false, st
			}
			return true, regState{st.Value, o.Version}
		case OpPut:
			if o.Unknown {
				return true, regState{i.Value, st.Version}
			}
			if o.Version < st.Version {
				return false, st
			}
			return true, regState{i.Value, o.Version}
		}
		return false, st
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(OpInput), out.(OpOutput)
		if i.Kind == OpGet && o.NoVersion {
			return fmt.Sprintf("get(%s) -> %q", i.Key, o.Value)
		}
		if i.Kind == OpGet {
			return fmt.Sprintf("get(%s) -> %q @v%d", i.Key, o.Value, o.Version)
		}
		if o.Unknown {
			return fmt.Sprintf("put(%s, %q) -> unknown", i.Key, i.Value)
		}
		return fmt.Sprintf("put(%s, %q) @v%d", i.Key, i.Value, o.Version)
	},
	DescribeState: func(s any) string {
		st := s.(regState)
		return fmt.Sprintf("%q @v%d", st.Value, st.Version)
	},
}

func partitionByKey(h []porcupine.Operation) [][]porcupine.Operation {
	by := map[string][]porcupine.Operation{}
	var keys []string
	for _, op := range h {
		k := op.Input.(OpInput).Key
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], op)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, by[k])
	}
	return out
}

// History records client operations with virtual invocation and response times.
type History struct {
	ops        []porcupine.Operation
	nextClient int
}

// NewClientID returns a fresh porcupine client id (a client whose write outcome is unknown
// continues under a new id, since its old operation never returns).
func (h *History) NewClientID() int {
	id := h.nextClient
	h.nextClient++
	return id
}

// Add records a completed operation. call and ret are virtual nanoseconds.
func (h *History) Add(client int, in OpInput, out OpOutput, call, ret int64) {
	if out.Unknown {
		ret = math.MaxInt64
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// Operations returns the recorded history.
func (h *History) Operations() []porcupine.Operation { return h.ops }
