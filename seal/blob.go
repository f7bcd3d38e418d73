// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// TPM blob format, version 2. Every field is big-endian and length-prefixed,
// so the sized ones are exactly their TPM2B wire encodings:
//
//	"NST" 0x02
//	u16 len | TPMT_PUBLIC   of the sealed object (its authPolicy is the PCR policy)
//	u16 len | TPM2B_PRIVATE contents: the sealed secret, encrypted and MACed by the SRK
//	u16 len | TPM2B_NAME    contents of the SRK the object was created under
//	u8  n   | n PCR indices (sha256 bank), ascending
//	u16 len | TPMT_PUBLIC   of that SRK (version 2 only; its name is the field above)
//
// Nothing here is secret and nothing here is trusted: the TPM checks the
// public/private pair against the SRK on TPM2_Load (a flipped bit is
// TPM_RC_INTEGRITY), and a forged PCR list can only make the policy fail.
// The SRK name lets Unseal say "another TPM" instead of "corrupt". The
// SRK's public area (version 2) spares Unseal asking the TPM for it: the
// session salt is encrypted to the key the secret was sealed under, read
// from here, so a TPM round trip fewer (each 20-200 ms on a discrete TPM).
// Version 1 blobs (no SRK public area) still unseal, asking the TPM.
//
// The format lives here, without go-tpm, so that what only reads a record
// (Describe, the hook's agent path) does not link the TPM's code; package
// tpmseal, which seals and unseals, also checks the public area.
var tpmMagic = []byte{'N', 'S', 'T', 2}

// tpmVersionNoSRKPublic is the version of the blobs without the SRK's
// public area.
const tpmVersionNoSRKPublic = 1

// SRKNameSize is the size of a SHA-256 TPM name: the algorithm id and the
// digest.
const SRKNameSize = 2 + 32

// algSHA256 is TPM_ALG_SHA256, the algorithm id a name starts with.
const algSHA256 = 0x000B

// TPMBlob is a decoded TPM sealed blob. DecodeTPMBlob only checks its shape
// (tpmseal also checks that the public area is a policy-bound sealed
// object); the TPM checks the rest.
type TPMBlob struct {
	Public  []byte // TPMT_PUBLIC of the sealed object
	Private []byte // TPM2B_PRIVATE contents, opaque outside the TPM
	SRKName []byte // name (alg id + SHA-256 digest) of the SRK it was sealed under
	PCRs    []int  // sha256 PCRs the object's policy binds, ascending; may be empty
	// SRKPublic is the TPMT_PUBLIC of the SRK it was sealed under; nil in
	// a version 1 blob.
	SRKPublic []byte
}

// DecodeTPMBlob parses a blob made by the TPM sealer. It fails with
// ErrUnknownVersion for a blob from a newer format and ErrCorrupt for
// anything else that is not a well-formed version 1 or 2 blob. Decoding is
// canonical: a blob that decodes re-encodes to the same bytes.
func DecodeTPMBlob(blob []byte) (*TPMBlob, error) {
	v1 := bytes.HasPrefix(blob, []byte{'N', 'S', 'T', tpmVersionNoSRKPublic})
	if !v1 {
		if err := checkHeader(blob, tpmMagic, "TPM"); err != nil {
			return nil, err
		}
	}
	r := blobReader{buf: blob[len(tpmMagic):]}
	b := &TPMBlob{Public: r.sized(), Private: r.sized(), SRKName: r.sized()}
	n := r.byte()
	for _, p := range r.take(int(n)) {
		b.PCRs = append(b.PCRs, int(p))
	}
	if !v1 {
		if b.SRKPublic = r.sized(); r.err == "" && len(b.SRKPublic) == 0 {
			r.err = "empty SRK public area"
		}
	}
	if r.err == "" && len(r.buf) != 0 {
		r.err = fmt.Sprintf("%d trailing bytes", len(r.buf))
	}
	if r.err == "" {
		r.err = b.check()
	}
	if r.err != "" {
		return nil, fmt.Errorf("%w (%s)", ErrCorrupt, r.err)
	}
	return b, nil
}

// check validates the fields; it returns what is wrong, or "".
func (b *TPMBlob) check() string {
	switch {
	case len(b.Public) == 0:
		return "empty public area"
	case len(b.Private) == 0:
		return "empty private area"
	case len(b.SRKName) != SRKNameSize || binary.BigEndian.Uint16(b.SRKName) != algSHA256:
		return "SRK name is not a SHA-256 name"
	}
	for i, p := range b.PCRs {
		if p > MaxPCR || (i > 0 && p <= b.PCRs[i-1]) {
			return fmt.Sprintf("PCR list is not ascending PCR indices 0-%d", MaxPCR)
		}
	}
	return ""
}

// Encode returns the wire form of b: version 2, or 1 without SRKPublic.
// b's fields must fit their length prefixes; tpmseal's always do (a
// TPMT_PUBLIC and TPM2B_PRIVATE are well under 64 KiB, and at most 24
// PCRs).
func (b *TPMBlob) Encode() []byte {
	out := bytes.Clone(tpmMagic)
	if b.SRKPublic == nil {
		out[3] = tpmVersionNoSRKPublic
	}
	sized := func(f []byte) {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
		out = append(out, f...)
	}
	sized(b.Public)
	sized(b.Private)
	sized(b.SRKName)
	out = append(out, byte(len(b.PCRs)))
	for _, p := range b.PCRs {
		out = append(out, byte(p))
	}
	if b.SRKPublic != nil {
		sized(b.SRKPublic)
	}
	return out
}

// blobReader reads length-prefixed fields; the first failure sticks in err
// and later reads return nothing.
type blobReader struct {
	buf []byte
	err string
}

func (r *blobReader) take(n int) []byte {
	if r.err != "" {
		return nil
	}
	if n > len(r.buf) {
		r.err = fmt.Sprintf("truncated: want %d bytes, have %d", n, len(r.buf))
		return nil
	}
	out := r.buf[:n:n]
	r.buf = r.buf[n:]
	return out
}

func (r *blobReader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *blobReader) sized() []byte {
	n := r.take(2)
	if n == nil {
		return nil
	}
	return r.take(int(binary.BigEndian.Uint16(n)))
}
