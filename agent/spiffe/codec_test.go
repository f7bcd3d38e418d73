// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"bytes"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/mem"
)

// TestZeroingCodec: a message marshals as gRPC's codec has it, and its
// buffer holds zeros once the transport frees it, whatever its size.
func TestZeroingCodec(t *testing.T) {
	key := bytes.Repeat([]byte{0xA5}, 121)
	for _, certSize := range []int{0, 100, 4000} {
		m := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{SpiffeId: "spiffe://example.org/c", X509Svid: make([]byte, certSize), X509SvidKey: key}}}
		data, err := zeroingCodec{}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != 1 {
			t.Fatalf("%d buffers", len(data))
		}
		wire := data[0].ReadOnlyData()
		if !bytes.Contains(wire, key) {
			t.Fatal("the marshaled message lacks the key")
		}
		var back workload.X509SVIDResponse
		if err := (zeroingCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(wire))}, &back); err != nil || !bytes.Equal(back.Svids[0].X509SvidKey, key) {
			t.Fatalf("round trip: %v", err)
		}
		data.Free()
		if !bytes.Equal(wire[:cap(wire)], make([]byte, cap(wire))) {
			t.Errorf("cert of %d bytes: the buffer holds data after Free", certSize)
		}
	}
	if _, err := (zeroingCodec{}).Marshal("not a message"); err == nil {
		t.Error("marshaled a string")
	}
}
