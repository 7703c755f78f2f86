package node

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
	"github.com/minimon/minimon/internal/paxos"
)

// fuzzFrames splits data into frames of a 2-byte big-endian length and that many bytes.
func fuzzFrames(data []byte) [][]byte {
	var out [][]byte
	for len(data) >= 2 && len(out) < 64 {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

func fuzzFrame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// FuzzPeerEnvelope delivers arbitrary decoded envelopes (election, paxos, probe; from members,
// non-members and ourselves) to the nodes of a stable 3-member cluster, interleaved with the
// cluster's own traffic. Each frame is one control byte (bits 0-1: receiver; bit 2: claim to
// come from a member, bits 3-4 picking which) and an encoded PeerEnvelope. Nothing may panic,
// and each node stays sane: a known role, an election epoch that never goes back, first
// committed <= last committed, and a quorum role that names itself and its leader.
func FuzzPeerEnvelope(f *testing.F) {
	// Seeds: the envelopes of a real election and commit.
	f.Add([]byte{})
	f.Add(fuzzFrame([]byte{0xff, 0xff, 0xff}))
	for _, s := range seedEnvelopes(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		h.stable()
		type seen struct{ epoch uint64 }
		prev := make([]seen, len(h.nodes))
		check := func(where string) {
			t.Helper()
			for r, n := range h.nodes {
				st := n.Status()
				switch st.Role {
				case Probing, Synchronizing, Electing, Leader, Peon:
				default:
					t.Fatalf("%s: node %d in role %v", where, r, st.Role)
				}
				if st.ElectionEpoch < prev[r].epoch {
					t.Fatalf("%s: node %d election epoch went back from %d to %d", where, r, prev[r].epoch, st.ElectionEpoch)
				}
				prev[r].epoch = st.ElectionEpoch
				if st.FirstCommitted > st.LastCommitted {
					t.Fatalf("%s: node %d first_committed %d > last_committed %d", where, r, st.FirstCommitted, st.LastCommitted)
				}
				if st.Role.InQuorum() && (!slices.Contains(st.Quorum, int32(r)) || !slices.Contains(st.Quorum, st.Leader)) {
					t.Fatalf("%s: node %d is %v with quorum %v and leader %d", where, r, st.Role, st.Quorum, st.Leader)
				}
				if (st.Role == Leader) != (st.Role.InQuorum() && st.Leader == int32(r)) {
					t.Fatalf("%s: node %d is %v but the leader is %d", where, r, st.Role, st.Leader)
				}
			}
		}
		check("stable")
		for i, fr := range fuzzFrames(data) {
			if len(fr) == 0 {
				continue
			}
			env := &minimonv1.PeerEnvelope{}
			if proto.Unmarshal(fr[1:], env) != nil {
				continue
			}
			to := int(fr[0]&3) % 3
			if fr[0]&4 != 0 {
				env.FromRank = int32(fr[0]>>3&3) % 3
			}
			h.nodes[to].Step(h.now, env)
			// Let the cluster answer: it must neither panic nor fail a store write.
			h.tick(7 * time.Millisecond)
			h.settle()
			check("frame " + string(rune('0'+i%10)))
		}
		for range 20 {
			h.tick(50 * time.Millisecond)
			h.settle()
			check("after")
		}
	})
}

// seedEnvelopes records the traffic of a cluster that elects a leader and commits a value,
// and returns it as inputs (some envelopes alone, and a run of many), each frame with its
// receiver and its member sender. The harness's helpers need a *testing.T, so this drives the
// nodes itself.
func seedEnvelopes(f *testing.F) [][]byte {
	h := &harness{now: time.Unix(1000, 0), to: map[*minimonv1.PeerEnvelope]int32{}}
	for r := int32(0); r < 3; r++ {
		e := &fakeEnv{h: h, rank: r, st: kvstore.NewMem()}
		cfg := testConfig(r)
		cfg.Clock = func() time.Time { return h.now }
		n, err := New(cfg, e.st, e, h.now)
		if err != nil {
			f.Fatal(err)
		}
		h.nodes, h.envs = append(h.nodes, n), append(h.envs, e)
	}
	for _, n := range h.nodes {
		n.Start(h.now)
	}
	settle := func() {
		for range 100 {
			k := h.deliver(nil)
			for _, e := range h.envs {
				for len(e.writes) > 0 { // done may issue further writes
					w := e.writes[0]
					e.writes = e.writes[1:]
					if err := e.st.Apply(w.tx); err != nil {
						f.Fatal(err)
					}
					w.done()
					k++
				}
			}
			if k == 0 {
				return
			}
		}
	}
	proposed := false
	for range 300 {
		h.now = h.now.Add(10 * time.Millisecond)
		for _, n := range h.nodes {
			n.Tick(h.now)
		}
		settle()
		for _, n := range h.nodes {
			if !proposed && n.Role() == Leader && n.Paxos().Writeable() {
				b, _ := proto.Marshal(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{{
					Kind: minimonv1.StoreOp_PUT, Bucket: "kv", Key: []byte("k"), Value: []byte("v")}}})
				if err := n.Propose(h.now, b, func(paxos.Result) {}); err != nil {
					f.Fatal(err)
				}
				proposed = true
			}
		}
	}
	if !proposed {
		f.Fatal("seed cluster elected no writeable leader")
	}
	var out [][]byte
	var run []byte
	for r, e := range h.envs {
		for i, m := range e.sent {
			b, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			fr := fuzzFrame(append([]byte{byte(h.to[m]) | 4 | byte(r)<<3}, b...))
			if i%5 == 0 {
				out = append(out, fr)
			}
			if len(run) < 4096 {
				run = append(run, fr...)
			}
		}
	}
	return append(out, run)
}
