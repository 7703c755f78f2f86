package paxos

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// A small deterministic harness: N instances, in-memory stores that apply each Persist, a
// manual clock and one FIFO message queue whose delivery the test controls.

var epoch0 = time.Unix(1000, 0)

type node struct {
	rank      int32
	p         *Paxos
	st        *kvstore.Mem
	down      bool
	committed []Entry
	results   map[ProposalID]Result
	bootstrap []string
	lastRd    Ready
}

type cluster struct {
	t       testing.TB
	now     time.Time
	members []int32
	nodes   map[int32]*node
	queue   []*minimonv1.PaxosMessage
	// cut drops every message between the two ranks (either direction) when true.
	cut     map[[2]int32]bool
	mutate  func(*Config)
	epoch   uint64
	leader  int32
	quorum  []int32
	sent    []*minimonv1.PaxosMessage // every message ever produced, for assertions
	sentAt  map[*minimonv1.PaxosMessage]time.Time
	dropIf  func(*minimonv1.PaxosMessage) bool // messages it matches are lost
	holdAdv bool                               // when true, process does not Advance (own write pending)
}

func testConfig(rank int32, members []int32) Config {
	cfg := DefaultConfig()
	cfg.Rank = rank
	cfg.Members = members
	cfg.Incarnation = uint64(rank)*1000 + 7
	return cfg
}

func newCluster(t testing.TB, n int, mutate func(*Config)) *cluster {
	c := &cluster{t: t, now: epoch0, nodes: map[int32]*node{}, cut: map[[2]int32]bool{}, mutate: mutate,
		sentAt: map[*minimonv1.PaxosMessage]time.Time{}}
	for i := range n {
		c.members = append(c.members, int32(i))
	}
	for _, r := range c.members {
		c.nodes[r] = &node{rank: r, st: kvstore.NewMem(), results: map[ProposalID]Result{}}
		c.start(r, true)
	}
	return c
}

func (c *cluster) cfg(r int32) Config {
	cfg := testConfig(r, c.members)
	if c.mutate != nil {
		c.mutate(&cfg)
	}
	return cfg
}

// start (re)creates the instance of r on its store, as a process start.
func (c *cluster) start(r int32, fresh bool) {
	n := c.nodes[r]
	cfg := c.cfg(r)
	cfg.Incarnation += uint64(c.now.UnixNano()) // a new incarnation per start
	p, err := New(cfg, n.st, c.now, fresh)
	if err != nil {
		c.t.Fatalf("New(%d): %v", r, err)
	}
	n.p, n.down = p, false
	n.results = map[ProposalID]Result{}
}

func (c *cluster) crash(r int32) { c.nodes[r].down = true }

func (c *cluster) isCut(a, b int32) bool { return c.cut[[2]int32{a, b}] || c.cut[[2]int32{b, a}] }

func (c *cluster) setCut(a, b int32, on bool) {
	c.cut[[2]int32{a, b}] = on
	c.cut[[2]int32{b, a}] = on
}

// isolate cuts r from every other member.
func (c *cluster) isolate(r int32, on bool) {
	for _, o := range c.members {
		if o != r {
			c.setCut(r, o, on)
		}
	}
}

// process executes every Ready of r in the order of the package doc.
func (c *cluster) process(r int32) {
	n := c.nodes[r]
	for !n.down && n.p.HasReady() {
		rd := n.p.Ready()
		c.enqueue(rd.Parallel)
		if rd.Persist != nil {
			if err := n.st.Apply(rd.Persist); err != nil {
				c.t.Fatalf("node %d: Apply: %v", r, err)
			}
		}
		c.enqueue(rd.Messages)
		n.committed = append(n.committed, rd.Committed...)
		for _, res := range rd.Done {
			n.results[res.ID] = res
		}
		if rd.Bootstrap != "" {
			n.bootstrap = append(n.bootstrap, rd.Bootstrap)
		}
		n.lastRd = rd
		if c.holdAdv {
			return
		}
		n.p.Advance(c.now, rd)
	}
}

func (c *cluster) enqueue(ms []*minimonv1.PaxosMessage) {
	for _, m := range ms {
		c.sentAt[m] = c.now
		c.sent = append(c.sent, m)
		c.queue = append(c.queue, m)
	}
}

func (c *cluster) processAll() {
	for _, r := range c.members {
		c.process(r)
	}
}

// deliverTo delivers (in order) the queued messages matching f, leaving the others queued.
func (c *cluster) deliverWhere(f func(m *minimonv1.PaxosMessage) bool) int {
	var keep, take []*minimonv1.PaxosMessage
	for _, m := range c.queue {
		if f(m) {
			take = append(take, m)
		} else {
			keep = append(keep, m)
		}
	}
	c.queue = keep
	for _, m := range take {
		if c.isCut(m.From, m.To) || c.nodes[m.To].down || (c.dropIf != nil && c.dropIf(m)) {
			continue
		}
		c.nodes[m.To].p.Step(c.now, m)
		c.process(m.To)
	}
	return len(take)
}

// putRaw writes paxos state straight into r's store and reloads the instance.
func (c *cluster) putRaw(r int32, kv map[string]uint64, vals map[uint64][]byte) {
	tx := &minimonv1.Transaction{}
	for k, v := range kv {
		tx.Ops = append(tx.Ops, putU64(k, v))
	}
	for v, b := range vals {
		tx.Ops = append(tx.Ops, putOp(U64(v), b))
	}
	if err := c.nodes[r].st.Apply(tx); err != nil {
		c.t.Fatal(err)
	}
	c.start(r, true)
}

// deliverOne delivers the head of the queue; false when empty.
func (c *cluster) deliverOne() bool {
	if len(c.queue) == 0 {
		return false
	}
	m := c.queue[0]
	c.queue = c.queue[1:]
	if c.isCut(m.From, m.To) || (c.dropIf != nil && c.dropIf(m)) {
		return true
	}
	n := c.nodes[m.To]
	if n == nil || n.down {
		return true
	}
	n.p.Step(c.now, m)
	c.process(m.To)
	return true
}

// stabilize delivers until no message is left (at the current instant).
func (c *cluster) stabilize() {
	c.processAll()
	for i := 0; c.deliverOne(); i++ {
		if i > 100000 {
			c.t.Fatal("stabilize: no quiescence")
		}
	}
}

// elect makes leader the leader of a new epoch with quorum (releaseAt = now) and stabilizes.
func (c *cluster) elect(leader int32, quorum ...int32) {
	c.electAt(leader, c.now, quorum...)
}

func (c *cluster) electAt(leader int32, releaseAt time.Time, quorum ...int32) {
	c.epoch += 2
	c.leader, c.quorum = leader, quorum
	c.queue = nil
	for _, r := range quorum {
		if r != leader {
			c.nodes[r].p.Peon(c.now, c.epoch, leader, quorum)
		}
	}
	c.nodes[leader].p.Leader(c.now, c.epoch, quorum, releaseAt)
	c.stabilize()
}

// tick advances the clock by d in steps of step, ticking live nodes and delivering everything.
func (c *cluster) run(d, step time.Duration) {
	end := c.now.Add(d)
	for c.now.Before(end) {
		c.now = c.now.Add(step)
		for _, r := range c.members {
			if n := c.nodes[r]; !n.down {
				n.p.Tick(c.now)
			}
		}
		c.stabilize()
	}
}

func (c *cluster) leaderP() *Paxos { return c.nodes[c.leader].p }

func (c *cluster) propose(ops ...*minimonv1.StoreOp) ProposalID {
	c.t.Helper()
	id, err := c.leaderP().Propose(c.now, encodeTx(c.t, ops...))
	if err != nil {
		c.t.Fatalf("Propose: %v", err)
	}
	return id
}

func encodeTx(t testing.TB, ops ...*minimonv1.StoreOp) []byte {
	b, err := proto.Marshal(&minimonv1.Transaction{Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func kvPut(k, v string) *minimonv1.StoreOp {
	return &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: "kv", Key: []byte(k), Value: []byte(v)}
}

func (c *cluster) get(r int32, bucket, key string) string {
	b, err := c.nodes[r].st.Get(bucket, []byte(key))
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

func (c *cluster) storedU64(r int32, key string) uint64 {
	b, _ := c.nodes[r].st.Get(Bucket, []byte(key))
	if len(b) != 8 {
		return 0
	}
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// checkAgreement: every node's applied versions agree with every other's.
func (c *cluster) checkAgreement() {
	c.t.Helper()
	seen := map[uint64]string{}
	for _, r := range c.members {
		n := c.nodes[r]
		last := uint64(0)
		for _, e := range n.committed {
			if e.Version <= last {
				c.t.Fatalf("node %d applied version %d after %d", r, e.Version, last)
			}
			last = e.Version
			if s, ok := seen[e.Version]; ok && s != string(e.Value) {
				c.t.Fatalf("two values at version %d", e.Version)
			}
			seen[e.Version] = string(e.Value)
		}
	}
}

func (c *cluster) sentOps(op minimonv1.PaxosMessage_Op) []*minimonv1.PaxosMessage {
	var out []*minimonv1.PaxosMessage
	for _, m := range c.sent {
		if m.Op == op {
			out = append(out, m)
		}
	}
	return out
}

func (c *cluster) String() string {
	s := ""
	for _, r := range c.members {
		p := c.nodes[r].p
		s += fmt.Sprintf("[%d fc=%d lc=%d role=%d ph=%v down=%v] ", r, p.fc, p.lc, p.role, p.ph, c.nodes[r].down)
	}
	return s
}

var _ = slices.Contains[[]int32]
