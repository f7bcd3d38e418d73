// SPDX-License-Identifier: Apache-2.0

package containerlog

import (
	"crypto/sha256"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// DefaultIndex is the NV index the log is extended into: in the owner's
// range (TCG handle registry: 0x01000000-0x013FFFFF for the platform
// owner), "NS" and 27 in its low bytes. Options.Index changes it.
const DefaultIndex uint32 = 0x014e5327

// Public is the NV index's public area as the agent defines it:
// an extend index (TPM_NT_EXTEND, SHA-256, 32 bytes) written only with
// its authValue (AUTHWRITE; neither owner, platform nor policy may
// write), read with owner authorization (OWNERREAD, so that 'northstarctl
// attest' certifies it), out of the dictionary-attack lockout (NO_DA: a
// wrong auth from someone else must not lock the agent out), and not
// ORDERLY (an extend is in NV when the command returns, not at the next
// orderly shutdown).
func Public(index uint32) tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: tpm2.TPMHandle(index),
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			NT:        tpm2.TPMNTExtend,
			AuthWrite: true,
			OwnerRead: true,
			NoDA:      true,
		},
		DataSize: sha256.Size,
	}
}

// CheckPublic refuses an index whose attributes let someone other than
// the holder of its authValue write it, or that is not a SHA-256 extend
// index: what a verifier checks through the certification too.
func CheckPublic(p *tpm2.TPMSNVPublic) error {
	a := p.Attributes
	switch {
	case a.NT != tpm2.TPMNTExtend:
		return fmt.Errorf("NV index %#x is of type %d, not an extend index", uint32(p.NVIndex), a.NT)
	case p.NameAlg != tpm2.TPMAlgSHA256 || p.DataSize != sha256.Size:
		return fmt.Errorf("NV index %#x does not extend SHA-256", uint32(p.NVIndex))
	case a.OwnerWrite || a.PPWrite || a.PolicyWrite || !a.AuthWrite:
		return fmt.Errorf("NV index %#x may be written by others than its authValue's holder (ownerwrite %v, ppwrite %v, policywrite %v, authwrite %v)",
			uint32(p.NVIndex), a.OwnerWrite, a.PPWrite, a.PolicyWrite, a.AuthWrite)
	case a.WriteLocked:
		return fmt.Errorf("NV index %#x is write-locked", uint32(p.NVIndex))
	}
	return nil
}
