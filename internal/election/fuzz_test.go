package election

import (
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// FuzzStep feeds random messages and calls to one elector (rank 1 of 3): it must never panic,
// its epoch never decreases, every epoch change is persisted, a message never names an epoch
// that is not yet persisted, and it acks at most one candidate per epoch (rule 9).
func FuzzStep(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 1, 0, 0, 0, 0})
	// PREVOTE from 2, PROPOSE epoch 3 from 0, PROPOSE epoch 3 from 2, VICTORY 4 from 0.
	f.Add([]byte{5, 5, 2, 0, 0, 0, 1, 0, 0, 1, 0, 3, 0, 1, 0, 0, 0, 1, 2, 3, 0, 1, 0, 0, 0, 3, 0, 4, 0, 1, 0, 7})
	// CallPreVote, supporting reply with the right nonce, ACK, tick past ET.
	f.Add([]byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1, 3, 0, 0, 2, 0, 1, 0, 1, 0, 0, 8, 40, 0, 0, 0, 0, 0, 0})
	// StartElection, SetQuorum, garbage op, huge epoch.
	f.Add([]byte{10, 7, 0, 9, 0, 0, 0, 0, 11, 0, 0, 2, 0, 0, 0, 7, 0, 99, 2, 1, 0, 0, 0, 0, 0, 1, 0, 255, 255, 0x80, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		st := newMemStore()
		st.apply(epochTx(uint64(len(data) % 7)))
		now := t0
		e, err := New(testConfig(1, 3), st, now)
		if err != nil {
			t.Fatal(err)
		}
		var lastEpoch, nonce uint64
		acked := map[uint64]int32{}
		drain := func() {
			for e.HasReady() {
				rd := e.Ready()
				if rd.Persist != nil {
					st.apply(rd.Persist)
				}
				stored := st.epoch(t)
				for _, m := range rd.Messages {
					switch m.GetOp() {
					case minimonv1.ElectionMessage_PROPOSE, minimonv1.ElectionMessage_ACK, minimonv1.ElectionMessage_VICTORY:
						if m.GetEpoch() > stored {
							t.Fatalf("%v for epoch %d sent with %d stored", m.GetOp(), m.GetEpoch(), stored)
						}
					case minimonv1.ElectionMessage_PREVOTE:
						nonce = m.GetNonce()
					}
					if m.GetOp() == minimonv1.ElectionMessage_ACK {
						if prev, ok := acked[m.GetEpoch()]; ok && prev != m.GetTo() {
							t.Fatalf("acked %d and %d in epoch %d", prev, m.GetTo(), m.GetEpoch())
						}
						acked[m.GetEpoch()] = m.GetTo()
					}
				}
				e.Advance(rd)
			}
			if ep := e.Epoch(); ep < lastEpoch {
				t.Fatalf("epoch went back %d -> %d", lastEpoch, ep)
			} else {
				lastEpoch = ep
			}
			if st.epoch(t) != e.Epoch() && !(st.epoch(t) == 0 && e.Epoch() == 0) {
				t.Fatalf("epoch %d, stored %d", e.Epoch(), st.epoch(t))
			}
		}
		drain()
		for len(data) >= 8 {
			b := data[:8]
			data = data[8:]
			from := int32(int8(b[2])) % 4
			epoch := uint64(b[3]) | uint64(b[4])<<8
			if b[5]&0x80 != 0 {
				epoch = ^uint64(0) - epoch
			}
			var quorum []int32
			for r := range int32(4) {
				if b[7]&(1<<r) != 0 {
					quorum = append(quorum, r)
				}
			}
			switch a := b[0] % 12; {
			case a <= 6:
				m := &minimonv1.ElectionMessage{
					Op:          minimonv1.ElectionMessage_Op(b[1] % 8),
					From:        from,
					To:          1,
					Epoch:       epoch,
					MonmapEpoch: uint64(b[5]&3) % 2,
					Support:     b[6]&2 != 0,
					Contending:  b[6]&4 != 0,
					Quorum:      quorum,
					Nonce:       uint64(b[6]),
					NakReason:   minimonv1.ElectionMessage_NakReason(b[6] % 4),
				}
				if b[5]&1 != 0 {
					m.MonmapEpoch = 1
				}
				if b[6]&1 != 0 {
					m.Nonce = nonce
				}
				if b[6]&8 != 0 {
					m.HorizonRemainingNs = int64(b[7]) * int64(time.Millisecond)
				}
				if b[6]&16 != 0 {
					l := from
					m.Leader = &l
				}
				if b[6]&32 != 0 {
					m.To = from
				}
				e.Step(now, m)
			case a == 7:
				now = now.Add(time.Duration(b[1]) * 10 * time.Millisecond)
				e.Tick(now)
			case a == 8:
				e.SetHorizon(now.Add(time.Duration(b[1]) * time.Millisecond))
				e.NoteLeaderContact(now)
			case a == 9:
				e.CallPreVote(now)
			case a == 10:
				e.StartElection(now, epoch)
			case a == 11:
				e.SetQuorum(epoch, from, quorum)
			}
			drain()
		}
	})
}
