// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// zeroingCodec is gRPC's proto codec with one change: every message it
// marshals goes into a buffer that is zeroed when the transport is done
// with it, so the encoding of an X.509-SVID's private key does not stay in
// a pooled buffer for the next message to find (gRPC's own codec returns
// its buffers to a shared pool as they are). The server also writes
// without a write buffer (grpc.WriteBufferSize(0)): frames go from this
// buffer to the socket, not through a batching copy that stays around.
//
// Not covered, and said so in docs/spiffe.md: the crypto/ecdsa key object
// an issuance made, and the kernel's socket buffer, until reused.
type zeroingCodec struct{}

// zeroPool hands out plain allocations and zeroes what it is given back;
// it keeps nothing.
type zeroPool struct{}

// minPooled keeps every buffer above gRPC's pooling threshold (1 KiB), below
// which mem.NewBuffer would wrap it as a slice never handed back to Put.
const minPooled = 1<<10 + 1

func (zeroPool) Get(n int) *[]byte {
	b := make([]byte, n, max(n, minPooled))
	return &b
}

func (zeroPool) Put(b *[]byte) { clear((*b)[:cap(*b)]) }

func (zeroingCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto: marshal %T: not a proto message", v)
	}
	// Size first, so that MarshalAppend may use the size it cached.
	buf := zeroPool{}.Get(proto.Size(m))
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		zeroPool{}.Put(buf)
		return nil, fmt.Errorf("proto: marshal: %w", err)
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, zeroPool{})}, nil
}

func (zeroingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("proto: unmarshal into %T: not a proto message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Name is "proto": the codec every gRPC client asks for.
func (zeroingCodec) Name() string { return "proto" }
