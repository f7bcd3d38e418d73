// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/northstar-oci/northstar/seal"
)

// syntheticBlob is a well-formed blob built without a TPM.
func syntheticBlob(pcrs ...int) *seal.TPMBlob {
	return &seal.TPMBlob{
		Public:  tpm2.Marshal(sealedTemplate(bytes.Repeat([]byte{0x11}, 32))),
		Private: bytes.Repeat([]byte{0x22}, 48),
		SRKName: append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{0x33}, 32)...),
		PCRs:    pcrs,
	}
}

// TestDecode: the public area's check, on top of the shape that package
// seal's TestDecodeTPMBlob covers.
func TestDecode(t *testing.T) {
	good := syntheticBlob(7, 16).Encode()
	b, _, err := decode(good)
	if err != nil {
		t.Fatal(err)
	}
	if seal.FormatPCRs(b.PCRs) != "7,16" || !bytes.Equal(b.Encode(), good) {
		t.Fatalf("decoded %+v", b)
	}

	with := func(f func(b *seal.TPMBlob)) []byte {
		b := syntheticBlob(7)
		f(b)
		return b.Encode()
	}
	passwordObject := sealedTemplate(make([]byte, 32))
	passwordObject.ObjectAttributes.UserWithAuth = true
	sha1Named := sealedTemplate(make([]byte, 32))
	sha1Named.NameAlg = tpm2.TPMAlgSHA1
	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"nil", nil, seal.ErrCorrupt},
		{"public garbage", with(func(b *seal.TPMBlob) { b.Public = []byte("garbage") }), seal.ErrCorrupt},
		{"public trailing byte", with(func(b *seal.TPMBlob) { b.Public = append(b.Public, 0) }), seal.ErrCorrupt},
		{"public is the SRK", with(func(b *seal.TPMBlob) { b.Public = tpm2.Marshal(tpm2.ECCSRKTemplate) }), seal.ErrCorrupt},
		{"public allows passwords", with(func(b *seal.TPMBlob) { b.Public = tpm2.Marshal(passwordObject) }), seal.ErrCorrupt},
		{"public named with SHA-1", with(func(b *seal.TPMBlob) { b.Public = tpm2.Marshal(sha1Named) }), seal.ErrCorrupt},
		{"public without policy", with(func(b *seal.TPMBlob) { b.Public = tpm2.Marshal(sealedTemplate(nil)) }), seal.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, err := decode(tt.blob)
			if !errors.Is(err, tt.want) {
				t.Fatalf("decode = %+v, %v; want %v", b, err, tt.want)
			}
		})
	}
}

// FuzzDecodeTPMBlob: no input panics, every error is seal.ErrCorrupt or
// seal.ErrUnknownVersion, and whatever decodes re-encodes to the same bytes. The
// seed corpus in testdata holds real blobs from the simulator.
func FuzzDecodeTPMBlob(f *testing.F) {
	f.Add(syntheticBlob().Encode())
	f.Add(syntheticBlob(0, 7, 23).Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		b, _, err := decode(data)
		if err != nil {
			if !errors.Is(err, seal.ErrCorrupt) && !errors.Is(err, seal.ErrUnknownVersion) {
				t.Fatalf("error is neither seal.ErrCorrupt nor seal.ErrUnknownVersion: %v", err)
			}
			return
		}
		if got := b.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoded %x\nfrom      %x", got, data)
		}
	})
}
