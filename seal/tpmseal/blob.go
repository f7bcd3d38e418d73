// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/northstar-oci/northstar/seal"
)

// decode is seal.DecodeTPMBlob and the part of the check that needs
// go-tpm: the public area must be a policy-bound sealed object, encoded
// canonically, so that a decoded blob re-encodes to the same bytes.
func decode(blob []byte) (*seal.TPMBlob, error) {
	b, err := seal.DecodeTPMBlob(blob)
	if err != nil {
		return nil, err
	}
	pub, err := public(b)
	if err != nil {
		return nil, fmt.Errorf("%w (public area: %v)", seal.ErrCorrupt, err)
	}
	// A sealed object of ours is a policy-only KeyedHash. Anything else was
	// not written by Seal (and the TPM would refuse it anyway).
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.ObjectAttributes.UserWithAuth || len(pub.AuthPolicy.Buffer) != 32 {
		return nil, fmt.Errorf("%w (public area is not a policy-bound sealed object)", seal.ErrCorrupt)
	}
	return b, nil
}

// public unmarshals the public area, refusing trailing or non-canonical
// bytes.
func public(b *seal.TPMBlob) (pub *tpm2.TPMTPublic, err error) {
	// go-tpm's reflection-based unmarshaling is not written for hostile input;
	// a panic on garbage is a corrupt blob, not a crash of the hook.
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("unparsable: %v", r)
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b.Public)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(pub), b.Public) {
		return nil, fmt.Errorf("non-canonical encoding")
	}
	return pub, nil
}
