package monitor

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// exactCodec is gRPC's proto codec with replies encoded into buffers of their own size. The
// default codec takes them from gRPC's shared pool, which has no size between 32 KiB and
// 1 MiB: every reply or watch event of 32 KiB to 1 MiB (config-key values reach 64 KiB) then
// pins 1 MiB until it is written, and a client that opens the maximum of watches and never
// reads held over 3 GiB (hostile_test.go). Requests still decode through the pool (their
// buffer is freed right after).
type exactCodec struct{}

var _ encoding.CodecV2 = exactCodec{}

func (exactCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("monitor: cannot marshal %T: not a proto message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (exactCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("monitor: cannot unmarshal into %T: not a proto message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func (exactCodec) Name() string { return "proto" }
