// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/northstar-oci/northstar/seal"
)

// decode is seal.DecodeTPMBlob and the part of the check that needs
// go-tpm: the public area must be a policy-bound sealed object named with
// SHA-256 and the SRK's (version 2) the TCG ECC SRK named by the blob's SRK
// name, both encoded canonically, so that a decoded blob re-encodes to the
// same bytes and the names computed from those bytes are the TPM's. It
// returns the SRK, nil for a version 1 blob.
func decode(blob []byte) (*seal.TPMBlob, *srk, error) {
	b, err := seal.DecodeTPMBlob(blob)
	if err != nil {
		return nil, nil, err
	}
	pub, err := public(b.Public)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (public area: %v)", seal.ErrCorrupt, err)
	}
	// A sealed object of ours is a policy-only KeyedHash. Anything else was
	// not written by Seal (and the TPM would refuse it anyway).
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.ObjectAttributes.UserWithAuth || len(pub.AuthPolicy.Buffer) != 32 {
		return nil, nil, fmt.Errorf("%w (public area is not a policy-bound sealed object)", seal.ErrCorrupt)
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, nil, fmt.Errorf("%w (public area is not named with SHA-256)", seal.ErrCorrupt)
	}
	if b.SRKPublic == nil {
		return b, nil, nil
	}
	s, ok := srkFromPublic(b.SRKPublic)
	if !ok {
		return nil, nil, fmt.Errorf("%w (SRK public area is not the TCG ECC P-256 SRK)", seal.ErrCorrupt)
	}
	if !bytes.Equal(s.name.Buffer, b.SRKName) {
		return nil, nil, fmt.Errorf("%w (SRK public area does not hash to the SRK name)", seal.ErrCorrupt)
	}
	return b, s, nil
}

// public unmarshals a public area, refusing trailing or non-canonical
// bytes.
func public(data []byte) (pub *tpm2.TPMTPublic, err error) {
	// go-tpm's reflection-based unmarshaling is not written for hostile input;
	// a panic on garbage is a corrupt blob, not a crash of the hook.
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("unparsable: %v", r)
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](data)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(pub), data) {
		return nil, fmt.Errorf("non-canonical encoding")
	}
	return pub, nil
}
