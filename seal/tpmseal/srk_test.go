// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestSRKPublicPrefix: the prefix is go-tpm's encoding of the TCG template
// up to its point (two coordinates of 32 zero bytes there).
func TestSRKPublicPrefix(t *testing.T) {
	template := tpm2.Marshal(tpm2.ECCSRKTemplate)
	point := append(append([]byte{0, 32}, make([]byte, 32)...), append([]byte{0, 32}, make([]byte, 32)...)...)
	if want := append(bytes.Clone(srkPublicPrefix), point...); !bytes.Equal(template, want) {
		t.Fatalf("tpm2.ECCSRKTemplate encodes as\n%x\nthe prefix and a zero point are\n%x", template, want)
	}
}

// srkByReflection is what srkFromPublic replaces, kept as its reference:
// go-tpm's decoding of area, re-encoded to the same bytes, equal to the
// template but for its point, and its name. srkFromPublic also refuses a
// coordinate longer than P-256's 32 bytes, which go-tpm decodes.
func srkByReflection(t *testing.T, area []byte) (tpm2.TPM2BName, bool) {
	t.Helper()
	pub, err := public(area)
	if err != nil || pub.Type != tpm2.TPMAlgECC {
		return tpm2.TPM2BName{}, false
	}
	got := *pub
	got.Unique = tpm2.ECCSRKTemplate.Unique
	if !bytes.Equal(tpm2.Marshal(got), tpm2.Marshal(tpm2.ECCSRKTemplate)) {
		return tpm2.TPM2BName{}, false
	}
	if point, err := pub.Unique.ECC(); err != nil || len(point.X.Buffer) > p256Size || len(point.Y.Buffer) > p256Size {
		return tpm2.TPM2BName{}, false
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	return *name, true
}

func srkWithPoint(x, y []byte) []byte {
	pub := tpm2.ECCSRKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x},
		Y: tpm2.TPM2BECCParameter{Buffer: y},
	})
	return tpm2.Marshal(pub)
}

// TestSRKFromPublic holds the byte-wise check to go-tpm's decoding: the
// simulator's SRK, points with short coordinates, and every single-byte
// change, truncation and extension of a good encoding.
func TestSRKFromPublic(t *testing.T) {
	s, err := readSRK(simTPM(t))
	if err != nil || s == nil {
		// The simulator has no SRK until something seals.
		mustSeal(t, newSimSealer(t), randomSecret(t))
		if s, err = readSRK(simTPM(t)); err != nil {
			t.Fatal(err)
		}
	}
	good := [][]byte{
		s.public,
		srkWithPoint(bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{9}, 32)),
		srkWithPoint(bytes.Repeat([]byte{7}, 31), bytes.Repeat([]byte{9}, 32)),
		srkWithPoint(bytes.Repeat([]byte{7}, 32), nil),
	}
	var inputs [][]byte
	for _, g := range good {
		inputs = append(inputs, g, g[:len(g)-1], append(bytes.Clone(g), 0))
		for i := range g {
			for _, flip := range []byte{0x01, 0x80} {
				m := bytes.Clone(g)
				m[i] ^= flip
				inputs = append(inputs, m)
			}
		}
	}
	inputs = append(inputs, nil, srkPublicPrefix, srkWithPoint(bytes.Repeat([]byte{7}, 33), bytes.Repeat([]byte{9}, 32)),
		tpm2.Marshal(tpm2.RSASRKTemplate), tpm2.Marshal(sealedTemplate(make([]byte, 32))))
	accepted := 0
	for _, in := range inputs {
		wantName, want := srkByReflection(t, in)
		got, ok := srkFromPublic(in)
		if ok != want {
			t.Fatalf("srkFromPublic(%x) = %v, go-tpm says %v", in, ok, want)
		}
		if !ok {
			continue
		}
		accepted++
		if !bytes.Equal(got.name.Buffer, wantName.Buffer) || !bytes.Equal(got.public, in) || !bytes.Equal(tpm2.Marshal(got.pub), in) {
			t.Fatalf("srkFromPublic(%x): name %x (go-tpm's %x), public %x, pub encodes as %x",
				in, got.name.Buffer, wantName.Buffer, got.public, tpm2.Marshal(got.pub))
		}
	}
	if accepted < len(good) {
		t.Fatalf("accepted %d of %d inputs, fewer than the %d good ones", accepted, len(inputs), len(good))
	}
	t.Logf("%d inputs, %d accepted", len(inputs), accepted)
}
