package sim

import (
	"fmt"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"google.golang.org/protobuf/proto"
)

// clientBucket holds the simulated clients' registers.
const clientBucket = "simkv"

// client issues puts and reads on a few hot keys, one at a time, and records them.
type client struct {
	w          *World
	idx        int
	pid        int // porcupine client id; renewed after an unknown outcome
	seq        int
	leaderHint int
	cur        *clientOp
	stopped    bool
}

type clientOp struct {
	c      *client
	script *ScriptOp // scripted one-shot operation: no retry, result kept here
	in     OpInput
	call   time.Duration
	node   int
	closed bool
}

func newClient(w *World, idx int) *client {
	c := &client{w: w, idx: idx, pid: w.History.NewClientID(), leaderHint: idx % w.cfg.N}
	w.After(w.uniform(0, w.cfg.ThinkTime), c.next)
	return c
}

func (c *client) next() {
	if c.stopped {
		return
	}
	w := c.w
	key := fmt.Sprintf("k%d", w.rng.IntN(w.cfg.Keys))
	op := &clientOp{c: c, call: w.clk.now}
	if w.rng.IntN(2) == 0 {
		c.seq++
		op.in = OpInput{Kind: OpPut, Key: key, Value: fmt.Sprintf("c%d-%d", c.idx, c.seq)}
		op.node = c.leaderHint
		if w.rng.IntN(5) == 0 {
			op.node = w.rng.IntN(w.cfg.N)
		}
	} else {
		op.in = OpInput{Kind: OpGet, Key: key}
		op.node = w.rng.IntN(w.cfg.N)
	}
	c.cur = op
	w.After(w.cfg.ClientTimeout, func() { c.timeout(op) })
	c.send(op)
}

func (c *client) send(op *clientOp) {
	w := c.w
	w.After(w.latency(), func() {
		if op.closed {
			return
		}
		n := w.nodes[op.node]
		if !n.up { // connection refused: a definite failure
			c.failed(op)
			return
		}
		w.nodeEvent(op.node, 0, 0, false, func() { n.clientRequest(op) })
	})
}

// reply is called by a node; the answer reaches the client after a network latency.
func (c *client) reply(op *clientOp, out OpOutput, ok bool) {
	w := c.w
	w.After(w.latency(), func() {
		if op.closed {
			return
		}
		if !ok && !out.Unknown {
			c.failed(op)
			return
		}
		op.closed = true
		now := w.clk.now
		w.History.Add(c.pid, op.in, out, int64(op.call), int64(now))
		w.tracef("client %d %v on %d -> %+v", c.idx, op.in, op.node, out)
		if s := op.script; s != nil {
			s.Done, s.OK, s.Out, s.Node = true, !out.Unknown, out, op.node
			if out.Unknown {
				c.pid = w.History.NewClientID()
			}
			return
		}
		switch {
		case op.in.Kind == OpGet:
			w.stats.Reads++
		case out.Unknown:
			w.stats.PutsUnknown++
			c.pid = w.History.NewClientID()
		default:
			w.stats.PutsOK++
			w.putsOK = append(w.putsOK, [2]time.Duration{op.call, now})
			c.leaderHint = op.node
		}
		w.After(w.uniform(0, w.cfg.ThinkTime), c.next)
	})
}

// failed: the node refused (not leader, not readable, down): retry elsewhere soon, as a fresh
// invocation (the refused attempt had no effect).
func (c *client) failed(op *clientOp) {
	w := c.w
	w.tracef("client %d %v on %d refused", c.idx, op.in, op.node)
	if s := op.script; s != nil {
		op.closed = true
		s.Done, s.Node = true, op.node
		return
	}
	if op.in.Kind == OpGet {
		w.stats.ReadsErr++
	} else {
		w.stats.PutsFailed++
	}
	op.node = w.rng.IntN(w.cfg.N)
	if op.in.Kind == OpPut {
		c.leaderHint = op.node
	}
	w.After(w.uniform(5*time.Millisecond, 30*time.Millisecond), func() {
		if op.closed {
			return
		}
		op.call = w.clk.now
		c.send(op)
	})
}

func (c *client) timeout(op *clientOp) {
	if op.closed || op.call+c.w.cfg.ClientTimeout > c.w.clk.now {
		if !op.closed { // the op was retried: its deadline moved
			c.w.After(op.call+c.w.cfg.ClientTimeout-c.w.clk.now, func() { c.timeout(op) })
		}
		return
	}
	w := c.w
	op.closed = true
	if op.in.Kind == OpPut {
		w.History.Add(c.pid, op.in, OpOutput{Unknown: true}, int64(op.call), 0)
		w.stats.PutsUnknown++
		c.pid = w.History.NewClientID()
	}
	if s := op.script; s != nil {
		s.Done, s.Out.Unknown = true, op.in.Kind == OpPut
		return
	}
	w.After(w.uniform(0, w.cfg.ThinkTime), c.next)
}

func encodePut(key, value string) []byte {
	tx := &minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{
		Kind: minimonv1.StoreOp_PUT, Bucket: clientBucket, Key: []byte(key), Value: []byte(value),
	}}}
	b, err := proto.Marshal(tx)
	if err != nil {
		panic(err) // cannot happen for a well-formed message built here
	}
	return b
}

// txHasPut reports whether the encoded transaction value puts key=value in the client bucket.
func txHasPut(val []byte, key, value string) bool {
	var tx minimonv1.Transaction
	if err := proto.Unmarshal(val, &tx); err != nil {
		return false
	}
	for _, op := range tx.GetOps() {
		if op.GetKind() == minimonv1.StoreOp_PUT && op.GetBucket() == clientBucket &&
			string(op.GetKey()) == key && string(op.GetValue()) == value {
			return true
		}
	}
	return false
}

// ScriptOp is a scripted client operation sent to one node; Done once answered (OK: a value or
// an acknowledged write; Unknown: outcome unknown; neither: refused).
type ScriptOp struct {
	Done, OK bool
	Out      OpOutput
	Node     int
}

func (w *World) scriptOp(i int, in OpInput) *ScriptOp {
	if w.script == nil {
		w.script = &client{w: w, idx: -1, pid: w.History.NewClientID(), stopped: true}
		w.clients = append(w.clients, w.script)
	}
	s := &ScriptOp{Node: i}
	op := &clientOp{c: w.script, script: s, in: in, call: w.clk.now, node: i}
	w.scriptOps = append(w.scriptOps, op)
	w.After(w.cfg.ClientTimeout, func() { w.script.timeout(op) })
	n := w.nodes[i]
	if !n.up {
		op.closed, s.Done = true, true
		return s
	}
	w.nodeEvent(i, 0, 0, false, func() { n.clientRequest(op) })
	return s
}

// Read sends a read of key to node i now (no network latency); it is recorded in the history
// when answered.
func (w *World) Read(i int, key string) *ScriptOp {
	return w.scriptOp(i, OpInput{Kind: OpGet, Key: key})
}

// Write proposes key=value on node i now.
func (w *World) Write(i int, key, value string) *ScriptOp {
	return w.scriptOp(i, OpInput{Kind: OpPut, Key: key, Value: value})
}
