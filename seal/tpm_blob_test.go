// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// syntheticBlob is a well-formed blob built without a TPM.
func syntheticBlob(pcrs ...int) *TPMBlob {
	return &TPMBlob{
		Public:  tpm2.Marshal(sealedTemplate(bytes.Repeat([]byte{0x11}, 32))),
		Private: bytes.Repeat([]byte{0x22}, 48),
		SRKName: append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{0x33}, 32)...),
		PCRs:    pcrs,
	}
}

func TestDecodeTPMBlob(t *testing.T) {
	good := syntheticBlob(7, 16).encode()
	b, err := DecodeTPMBlob(good)
	if err != nil {
		t.Fatal(err)
	}
	if FormatPCRs(b.PCRs) != "7,16" || !bytes.Equal(b.encode(), good) {
		t.Fatalf("decoded %+v", b)
	}

	with := func(f func(b *TPMBlob)) []byte {
		b := syntheticBlob(7)
		f(b)
		return b.encode()
	}
	passwordObject := sealedTemplate(make([]byte, 32))
	passwordObject.ObjectAttributes.UserWithAuth = true
	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"nil", nil, ErrCorrupt},
		{"magic only", []byte("NST"), ErrCorrupt},
		{"header only", []byte("NST\x01"), ErrCorrupt},
		{"version 0", append([]byte("NST\x00"), good[4:]...), ErrUnknownVersion},
		{"version 255", []byte("NST\xff"), ErrUnknownVersion},
		{"wrong magic", append([]byte("NSH\x01"), good[4:]...), ErrCorrupt},
		{"length past the end", append([]byte("NST\x01\xff\xff"), good[6:]...), ErrCorrupt},
		{"PCR count past the end", append(bytes.Clone(good[:len(good)-3]), 5, 7), ErrCorrupt},
		{"trailing bytes", append(bytes.Clone(good), 0, 0), ErrCorrupt},
		{"empty private", with(func(b *TPMBlob) { b.Private = nil }), ErrCorrupt},
		{"short SRK name", with(func(b *TPMBlob) { b.SRKName = b.SRKName[:20] }), ErrCorrupt},
		{"SHA-1 SRK name", with(func(b *TPMBlob) { b.SRKName[1] = 0x04 }), ErrCorrupt},
		{"PCR 24", with(func(b *TPMBlob) { b.PCRs = []int{24} }), ErrCorrupt},
		{"PCRs not ascending", with(func(b *TPMBlob) { b.PCRs = []int{16, 7} }), ErrCorrupt},
		{"PCR twice", with(func(b *TPMBlob) { b.PCRs = []int{7, 7} }), ErrCorrupt},
		{"public garbage", with(func(b *TPMBlob) { b.Public = []byte("garbage") }), ErrCorrupt},
		{"public trailing byte", with(func(b *TPMBlob) { b.Public = append(b.Public, 0) }), ErrCorrupt},
		{"public is the SRK", with(func(b *TPMBlob) { b.Public = tpm2.Marshal(tpm2.ECCSRKTemplate) }), ErrCorrupt},
		{"public allows passwords", with(func(b *TPMBlob) { b.Public = tpm2.Marshal(passwordObject) }), ErrCorrupt},
		{"public without policy", with(func(b *TPMBlob) { b.Public = tpm2.Marshal(sealedTemplate(nil)) }), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := DecodeTPMBlob(tt.blob)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeTPMBlob = %+v, %v; want %v", b, err, tt.want)
			}
		})
	}
}

// FuzzDecodeTPMBlob: no input panics, every error is ErrCorrupt or
// ErrUnknownVersion, and whatever decodes re-encodes to the same bytes. The
// seed corpus in testdata holds real blobs from the simulator.
func FuzzDecodeTPMBlob(f *testing.F) {
	f.Add(syntheticBlob().encode())
	f.Add(syntheticBlob(0, 7, 23).encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeTPMBlob(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("error is neither ErrCorrupt nor ErrUnknownVersion: %v", err)
			}
			return
		}
		if got := b.encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoded %x\nfrom      %x", got, data)
		}
	})
}
