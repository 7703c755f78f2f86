package paxos

import (
	"errors"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

const ms = time.Millisecond

func TestSpec5_7_BasicCommitOnThree(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	if !c.leaderP().Writeable() {
		t.Fatal("leader not writeable after collect")
	}
	id := c.propose(kvPut("a", "1"))
	c.stabilize()
	for _, r := range c.members {
		if got := c.get(r, "kv", "a"); got != "1" {
			t.Fatalf("node %d kv/a = %q, want 1 (%v)", r, got, c)
		}
		if lc := c.storedU64(r, KeyLastCommitted); lc != 1 {
			t.Fatalf("node %d stored lc = %d", r, lc)
		}
		if fc := c.storedU64(r, KeyFirstCommitted); fc != 1 {
			t.Fatalf("node %d stored fc = %d", r, fc)
		}
	}
	res, ok := c.nodes[0].results[id]
	if !ok || res.Err != nil || res.Version != 1 {
		t.Fatalf("result = %+v %v", res, ok)
	}
	id2 := c.propose(kvPut("b", "2"))
	c.stabilize()
	if res := c.nodes[0].results[id2]; res.Err != nil || res.Version != 2 {
		t.Fatalf("second result = %+v", res)
	}
	if got := c.get(2, "kv", "b"); got != "2" {
		t.Fatalf("node 2 kv/b = %q", got)
	}
	c.checkAgreement()
	// Everyone is readable after the post-commit lease round.
	for _, r := range c.members {
		if !c.nodes[r].p.Readable(c.now) {
			t.Fatalf("node %d not readable after commit", r)
		}
	}
}

func TestSpec5_4_ProposalNumbers(t *testing.T) {
	p := &Paxos{cfg: Config{Rank: 2}}
	var last uint64
	for _, gt := range []uint64{0, 0, 150, 99, 1001} {
		pn := p.newPN(gt)
		if pn <= last || pn <= gt || pn%100 != 2 {
			t.Fatalf("newPN(%d) = %d after %d", gt, pn, last)
		}
		last = pn
	}
	c := newCluster(t, 3, nil)
	c.elect(1, 0, 1, 2)
	if got := c.storedU64(1, KeyLastPN); got != 101 {
		t.Fatalf("stored last_pn = %d, want 101", got)
	}
	for _, r := range c.members {
		if got := c.storedU64(r, KeyAcceptedPN); got != 101 {
			t.Fatalf("node %d accepted_pn = %d, want 101", r, got)
		}
	}
}

// The pn is durable before COLLECT leaves: COLLECT is in Messages of the Ready whose Persist
// holds last_pn.
func TestSpec5_12_CollectAfterPNPersisted(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := c.nodes[0].p
	p.Leader(c.now, 2, []int32{0, 1, 2}, c.now)
	rd := p.Ready()
	if len(rd.Parallel) != 0 || rd.Persist == nil || len(rd.Messages) != 2 {
		t.Fatalf("ready = %+v", rd)
	}
	found := false
	for _, op := range rd.Persist.Ops {
		if string(op.Key) == KeyLastPN {
			found = true
		}
	}
	if !found {
		t.Fatal("last_pn not in Persist")
	}
	for _, m := range rd.Messages {
		if m.Op != minimonv1.PaxosMessage_COLLECT || m.Round != 0 || m.Pn != 100 {
			t.Fatalf("message %v", m)
		}
	}
	if p.HasReady() {
		t.Fatal("HasReady while a Ready is outstanding")
	}
}

func TestSpec5_10_GroupCommit(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	p := c.leaderP()
	// Idle: the very next Ready carries BEGIN.
	first := c.propose(kvPut("k0", "v"))
	rd := p.Ready()
	if len(rd.Parallel) != 2 || rd.Parallel[0].Op != minimonv1.PaxosMessage_BEGIN {
		t.Fatalf("idle proposal: Ready.Parallel = %v", rd.Parallel)
	}
	// Apply it by hand, then propose many while the round is in flight.
	c.enqueue(rd.Parallel)
	if err := c.nodes[0].st.Apply(rd.Persist); err != nil {
		t.Fatal(err)
	}
	c.enqueue(rd.Messages)
	p.Advance(c.now, rd)
	var ids []ProposalID
	for i := range 10 {
		ids = append(ids, c.propose(kvPut("k"+string(rune('a'+i)), "v")))
	}
	c.stabilize()
	if r := c.nodes[0].results[first]; r.Err != nil || r.Version != 1 {
		t.Fatalf("first = %+v", r)
	}
	for _, id := range ids {
		if r := c.nodes[0].results[id]; r.Err != nil || r.Version != 2 {
			t.Fatalf("batched %d = %+v, want version 2", id, r)
		}
	}
	if p.LastCommitted() != 2 {
		t.Fatalf("lc = %d, want 2 (one value for the batch)", p.LastCommitted())
	}
	for _, r := range c.members {
		if c.get(r, "kv", "kj") != "v" {
			t.Fatalf("node %d lacks the batch", r)
		}
	}
}

func TestProposeRejects(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(0, 0, 1, 2)
	if _, err := c.nodes[1].p.Propose(c.now, encodeTx(t, kvPut("a", "b"))); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("peon Propose: %v", err)
	}
	if _, err := c.leaderP().Propose(c.now, []byte{0xff, 0xff}); !errors.Is(err, ErrBadValue) {
		t.Fatalf("garbage Propose: %v", err)
	}
	bad := &minimonv1.StoreOp{Kind: minimonv1.StoreOp_PUT, Bucket: Bucket, Key: []byte(KeyLastCommitted), Value: U64(9)}
	if _, err := c.leaderP().Propose(c.now, encodeTx(t, bad)); !errors.Is(err, ErrBadValue) {
		t.Fatalf("paxos-bucket Propose: %v", err)
	}
}
