package services

import (
	"testing"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/kvstore"
)

// FuzzMonmapStored decodes arbitrary bytes stored as a member map epoch (a damaged or foreign
// store): At and Latest return the map or an error, never panic, and a map they return has
// the epoch it is stored at.
func FuzzMonmapStored(f *testing.F) {
	good, err := proto.Marshal(&minimonv1.MonMap{Epoch: 2, Fsid: "f", Mons: []*minimonv1.MonInfo{{Name: "a", Addr: "h:1"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, uint64(2))
	f.Add(good, uint64(3))
	f.Add([]byte{0xff, 0x01}, uint64(1))
	f.Add([]byte{}, uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, epoch uint64) {
		st := kvstore.NewMem()
		if err := st.Apply(&minimonv1.Transaction{Ops: []*minimonv1.StoreOp{
			{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketMonmap, Key: kvstore.U64Key(epoch), Value: b},
			{Kind: minimonv1.StoreOp_PUT, Bucket: kvstore.BucketMonmap, Key: []byte(KeyLastCommitted), Value: kvstore.U64Key(epoch)},
		}}); err != nil {
			t.Fatal(err)
		}
		m := NewMonmap()
		if mm, err := m.At(st, epoch); err == nil && mm.GetEpoch() != epoch {
			t.Fatalf("At(%d) returned epoch %d", epoch, mm.GetEpoch())
		}
		if mm, err := m.Latest(st); err == nil && mm.GetEpoch() != epoch {
			t.Fatalf("Latest returned epoch %d, stored %d", mm.GetEpoch(), epoch)
		}
		_ = m.Refresh(st)
	})
}
