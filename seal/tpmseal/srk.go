// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

// srk is the persistent storage root key as this process checked it.
type srk struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName // computed here from public, not taken from the TPM's answer
	pub    tpm2.TPMTPublic
	public []byte // pub, encoded
}

// srkPublicPrefix is the encoding of the TCG ECC P-256 SRK template
// (tpm2.ECCSRKTemplate) up to its unique field, the key's point: an SRK made
// from the template encodes as this prefix, then x and y, each a 2-byte size
// and that many bytes (32 from the TPMs seen; the reference implementation
// pads them to the curve's size). Spelled out rather than marshaled from
// the template: the hook decodes a blob in every start without an agent,
// and go-tpm marshals by reflection, a cost a new process pays anew.
// TestSRKPublicPrefix holds it to go-tpm's encoding of the template.
var srkPublicPrefix = []byte{
	0x00, 0x23, // type: ECC
	0x00, 0x0b, // nameAlg: SHA-256
	0x00, 0x03, 0x04, 0x72, // fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt
	0x00, 0x00, // authPolicy: empty
	0x00, 0x06, 0x00, 0x80, 0x00, 0x43, // symmetric: AES-128-CFB
	0x00, 0x10, // scheme: null
	0x00, 0x03, // curve: NIST P-256
	0x00, 0x10, // kdf: null
}

// p256Size is the size of a P-256 point's coordinate.
const p256Size = 32

// srkFromPublic returns the SRK at SRKHandle whose public area is public,
// or false if public is not the TCG ECC P-256 SRK template's, byte for
// byte, with a point of its own. Being exact, it refuses any encoding but
// the canonical one, so the name computed from these bytes is the TPM's.
func srkFromPublic(public []byte) (*srk, bool) {
	if !bytes.HasPrefix(public, srkPublicPrefix) {
		return nil, false
	}
	x, rest, ok := coordinate(public[len(srkPublicPrefix):])
	if !ok {
		return nil, false
	}
	y, rest, ok := coordinate(rest)
	if !ok || len(rest) != 0 {
		return nil, false
	}
	// A copy of the template, whose parameters (a pointer in go-tpm's
	// union) it shares: read-only, here and in go-tpm's session code.
	pub := tpm2.ECCSRKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x},
		Y: tpm2.TPM2BECCParameter{Buffer: y},
	})
	return &srk{handle: SRKHandle, name: sha256Name(public), pub: pub, public: bytes.Clone(public)}, true
}

// coordinate splits a TPM2B_ECC_PARAMETER of at most p256Size bytes off b,
// copying it.
func coordinate(b []byte) (c, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > p256Size || len(b) < 2+n {
		return nil, nil, false
	}
	return bytes.Clone(b[2 : 2+n]), b[2+n:], true
}

// sha256Name is the TPM name of an object whose nameAlg is SHA-256 and
// whose public area encodes as public: the algorithm's id, then the digest
// of those bytes (TPM 2.0 Part 1, 16 "Names").
func sha256Name(public []byte) tpm2.TPM2BName {
	d := sha256.Sum256(public)
	return tpm2.TPM2BName{Buffer: append([]byte{byte(tpm2.TPMAlgSHA256 >> 8), byte(tpm2.TPMAlgSHA256)}, d[:]...)}
}
