// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"bytes"
	"errors"
	"testing"
)

// syntheticBlob is a blob of the right shape built without a TPM (its
// public area is opaque here: tpmseal checks it).
func syntheticBlob(pcrs ...int) *TPMBlob {
	return &TPMBlob{
		Public:    bytes.Repeat([]byte{0x11}, 50),
		Private:   bytes.Repeat([]byte{0x22}, 48),
		SRKName:   append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{0x33}, 32)...),
		PCRs:      pcrs,
		SRKPublic: bytes.Repeat([]byte{0x44}, 40),
	}
}

func TestDecodeTPMBlob(t *testing.T) {
	good := syntheticBlob(7, 16).Encode()
	b, err := DecodeTPMBlob(good)
	if err != nil {
		t.Fatal(err)
	}
	if FormatPCRs(b.PCRs) != "7,16" || !bytes.Equal(b.Encode(), good) || len(b.SRKPublic) != 40 {
		t.Fatalf("decoded %+v", b)
	}
	// Version 1, without the SRK's public area, still decodes, and
	// re-encodes as version 1.
	v1 := syntheticBlob(7, 16)
	v1.SRKPublic = nil
	goodV1 := v1.Encode()
	if b, err := DecodeTPMBlob(goodV1); err != nil || goodV1[3] != 1 || b.SRKPublic != nil || !bytes.Equal(b.Encode(), goodV1) {
		t.Fatalf("version 1: decoded %+v, %v", b, err)
	}

	with := func(f func(b *TPMBlob)) []byte {
		b := syntheticBlob(7)
		f(b)
		return b.Encode()
	}
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
		{"PCR count past the end", append(bytes.Clone(goodV1[:len(goodV1)-3]), 5, 7), ErrCorrupt},
		{"version 1 with an SRK public area", append([]byte("NST\x01"), good[4:]...), ErrCorrupt},
		{"version 2 without one", append([]byte("NST\x02"), goodV1[4:]...), ErrCorrupt},
		{"empty SRK public area", with(func(b *TPMBlob) { b.SRKPublic = []byte{} }), ErrCorrupt},
		{"SRK public area cut short", good[:len(good)-1], ErrCorrupt},
		{"trailing bytes", append(bytes.Clone(good), 0, 0), ErrCorrupt},
		{"empty public", with(func(b *TPMBlob) { b.Public = nil }), ErrCorrupt},
		{"empty private", with(func(b *TPMBlob) { b.Private = nil }), ErrCorrupt},
		{"short SRK name", with(func(b *TPMBlob) { b.SRKName = b.SRKName[:20] }), ErrCorrupt},
		{"SHA-1 SRK name", with(func(b *TPMBlob) { b.SRKName[1] = 0x04 }), ErrCorrupt},
		{"PCR 24", with(func(b *TPMBlob) { b.PCRs = []int{24} }), ErrCorrupt},
		{"PCRs not ascending", with(func(b *TPMBlob) { b.PCRs = []int{16, 7} }), ErrCorrupt},
		{"PCR twice", with(func(b *TPMBlob) { b.PCRs = []int{7, 7} }), ErrCorrupt},
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
