package paxos

import (
	"testing"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// FuzzStep feeds arbitrary decoded messages to a running 3-member cluster: nothing may panic,
// the store must accept every Persist the core produces, and lc never decreases.
func FuzzStep(f *testing.F) {
	val, _ := proto.Marshal(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{kvPut("f", "z")}})
	seeds := []*minimonv1.PaxosMessage{
		{Op: minimonv1.PaxosMessage_COLLECT, Pn: 10000, LastCommitted: 0, FirstCommitted: 5},
		{Op: minimonv1.PaxosMessage_COLLECT, Pn: 201, Round: 7},
		{Op: minimonv1.PaxosMessage_LAST, Pn: 100, LastCommitted: 9, Values: map[uint64][]byte{2: val, 3: {0xff}}},
		{Op: minimonv1.PaxosMessage_LAST, Pn: 5000, UncommittedPn: 99, LastCommitted: 1, Values: map[uint64][]byte{2: val}},
		{Op: minimonv1.PaxosMessage_BEGIN, Pn: 100, LastCommitted: 1, Values: map[uint64][]byte{2: val}},
		{Op: minimonv1.PaxosMessage_BEGIN, Pn: 100, LastCommitted: 1, Values: map[uint64][]byte{2: {1, 2, 3}}},
		{Op: minimonv1.PaxosMessage_BEGIN, Pn: 7777, LastCommitted: 1},
		{Op: minimonv1.PaxosMessage_ACCEPT, Pn: 100, LastCommitted: 1},
		{Op: minimonv1.PaxosMessage_COMMIT, LastCommitted: 3, Values: map[uint64][]byte{2: val, 3: val}},
		{Op: minimonv1.PaxosMessage_COMMIT, LastCommitted: 0, Values: map[uint64][]byte{1: {0xff}}},
		{Op: minimonv1.PaxosMessage_COMMIT, LastCommitted: 2, Values: map[uint64][]byte{2: {0x0a, 0x02, 0x08, 0x07}}},
		{Op: minimonv1.PaxosMessage_LEASE, LastCommitted: 1, LeaseSeq: 3, LeaseNanos: 1 << 62},
		{Op: minimonv1.PaxosMessage_LEASE_ACK, LastCommitted: 0, Round: 1},
		{Op: minimonv1.PaxosMessage_LEASE_ACK, LastCommitted: 1 << 40, Round: 1 << 60},
		{Op: 99},
	}
	for i, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(b, uint8(i), uint8(i+1), uint64(1<<40+i), false)
		f.Add(b, uint8(i+1), uint8(0), uint64(1<<40+i), true)
	}
	f.Add([]byte{0xff, 0x01}, uint8(1), uint8(0), uint64(1), false)
	f.Fuzz(func(t *testing.T, data []byte, to, from uint8, seq uint64, keepEpoch bool) {
		var m minimonv1.PaxosMessage
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		c := newCluster(t, 3, nil)
		c.elect(0, 0, 1, 2)
		c.propose(kvPut("a", "1"))
		c.stabilize()
		before := map[int32]uint64{}
		for _, r := range c.members {
			before[r] = c.nodes[r].p.LastCommitted()
		}
		m.To, m.From = int32(to%3), int32(from%3)
		if !keepEpoch {
			m.Epoch = c.epoch
		}
		m.Seq = seq
		c.nodes[m.To].p.Step(c.now, &m)
		c.processAll()
		c.run(300*ms, 50*ms)
		for _, r := range c.members {
			if lc := c.nodes[r].p.LastCommitted(); lc < before[r] {
				t.Fatalf("node %d lc went from %d to %d", r, before[r], lc)
			}
		}
	})
}
