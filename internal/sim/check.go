package sim

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
)

// Checker holds the safety invariants observed during a run. The first violation is kept; a
// run fails when Err is non-nil.
type Checker struct {
	chosen  map[uint64]string // version -> value, from the first node that committed it
	chosenA map[uint64]int    // node that first committed it (for messages)
	lc      map[int]uint64    // node -> highest last_committed seen (survives restarts)
	fc      map[int]uint64
	leaders map[uint64]int32 // election epoch -> leader rank
	errs    []string
	now     func() time.Duration
}

// NewChecker returns an empty checker; now stamps violations with virtual time (may be nil).
func NewChecker(now func() time.Duration) *Checker {
	if now == nil {
		now = func() time.Duration { return 0 }
	}
	return &Checker{
		chosen: map[uint64]string{}, chosenA: map[uint64]int{}, lc: map[int]uint64{},
		fc: map[int]uint64{}, leaders: map[uint64]int32{}, now: now,
	}
}

func (c *Checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf("t=%v: ", c.now())+fmt.Sprintf(format, args...))
}

// Commit records that node committed value at version v. Two different values at one version,
// on any two nodes or on one node over time, is a violation (agreement and stability).
func (c *Checker) Commit(node int, v uint64, value []byte) {
	if old, ok := c.chosen[v]; ok {
		if old != string(value) {
			c.fail("agreement: node %d committed version %d with a value (%d bytes, %x...) different from node %d's (%d bytes, %x...)",
				node, v, len(value), prefix([]byte(value)), c.chosenA[v], len(old), prefix([]byte(old)))
		}
		return
	}
	c.chosen[v] = string(value)
	c.chosenA[v] = node
}

func prefix(b []byte) []byte {
	if len(b) > 8 {
		return b[len(b)-8:]
	}
	return b
}

// Chosen returns the value chosen at v, if any node committed it.
func (c *Checker) Chosen(v uint64) ([]byte, bool) {
	s, ok := c.chosen[v]
	return []byte(s), ok
}

// LastCommitted records a node's stored last_committed; it must never decrease, restarts
// included.
func (c *Checker) LastCommitted(node int, lc uint64) {
	if old := c.lc[node]; lc < old {
		c.fail("durability: node %d last_committed went back from %d to %d", node, old, lc)
		return
	}
	c.lc[node] = lc
}

// FirstCommitted records a node's stored first_committed; it must never decrease (a full sync
// may move it forward).
func (c *Checker) FirstCommitted(node int, fc uint64) {
	if old := c.fc[node]; fc < old {
		c.fail("durability: node %d first_committed went back from %d to %d", node, old, fc)
		return
	}
	c.fc[node] = fc
}

// Leader records that rank won the election of epoch; two leaders in one epoch is a violation.
func (c *Checker) Leader(epoch uint64, rank int32) {
	if old, ok := c.leaders[epoch]; ok && old != rank {
		c.fail("election: two leaders in epoch %d: %d and %d", epoch, old, rank)
		return
	}
	c.leaders[epoch] = rank
}

// Violation records a violation found by a caller (scripted cases, scans).
func (c *Checker) Violation(format string, args ...any) { c.fail(format, args...) }

// Err returns the violations, or nil.
func (c *Checker) Err() error {
	if len(c.errs) == 0 {
		return nil
	}
	s := c.errs[0]
	if len(c.errs) > 1 {
		s += fmt.Sprintf(" (and %d more violations)", len(c.errs)-1)
	}
	return fmt.Errorf("%s", s)
}

// Errors returns every violation recorded.
func (c *Checker) Errors() []string { return c.errs }

// CheckLinearizable checks the history against KVModel.
func CheckLinearizable(ops []porcupine.Operation, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(KVModel, pruneUnobserved(ops), timeout)
}

// pruneUnobserved drops every put with an unknown outcome whose value no read returned. That
// keeps the verdict exact: such a put can always be linearized last (a register accepts any
// write, and an unknown put leaves the version bound alone), and in any linearization that
// holds it, it is followed by another write before any read (else that read would return its
// value), so removing it changes no read. It spares porcupine the 2^k orders of k never-seen
// writes (a partitioned leader's proposals).
func pruneUnobserved(ops []porcupine.Operation) []porcupine.Operation {
	type kv struct{ k, v string }
	seen := map[kv]bool{}
	for _, op := range ops {
		if in := op.Input.(OpInput); in.Kind == OpGet {
			seen[kv{in.Key, op.Output.(OpOutput).Value}] = true
		}
	}
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in, o := op.Input.(OpInput), op.Output.(OpOutput)
		if in.Kind == OpPut && o.Unknown && !seen[kv{in.Key, in.Value}] {
			continue
		}
		out = append(out, op)
	}
	return out
}
