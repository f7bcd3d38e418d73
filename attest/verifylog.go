// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	goattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"

	"github.com/northstar-oci/northstar/attest/containerlog"
)

// ContainerProof is what a verified container log shows.
type ContainerProof struct {
	Index   uint32
	Value   [sha256.Size]byte // the certified value the log replays to
	Attrs   string            // the index's attributes, as certified
	Batches int
	// First is the number of the log's first record in the evidence: the
	// evidence carries a tail of the log when it is long.
	First  uint64
	Events []containerlog.Event
}

// verifyContainers checks the AK certified the NV index over nonce, that
// the index is one only its authValue's holder extends, and that the log
// replays to the certified value.
func verifyContainers(c *Containers, ak *goattest.AKPublic, nonce []byte) (*ContainerProof, error) {
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](c.Certification.Attest)
	if err != nil {
		return nil, fmt.Errorf("%w: the certification does not parse: %v", ErrNV, err)
	}
	if err := checkSignature(ak, c.Certification.Attest, c.Certification.Signature); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNV, err)
	}
	if att.Type != tpm2.TPMSTAttestNV {
		return nil, fmt.Errorf("%w: the AK signed a TPMS_ATTEST of type %#x, not an NV certification", ErrNV, uint16(att.Type))
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		return nil, fmt.Errorf("%w: the NV certification answers nonce %s, not %s (replayed, or made for another verifier)",
			ErrWrongNonce, hex.EncodeToString(att.ExtraData.Buffer), hex.EncodeToString(nonce))
	}
	info, err := att.Attested.NV()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNV, err)
	}
	nv, err := tpm2.Unmarshal[tpm2.TPMSNVPublic](c.NVPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: the index's public area does not parse: %v", ErrNV, err)
	}
	name, err := tpm2.NVName(nv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNV, err)
	}
	if !bytes.Equal(name.Buffer, info.IndexName.Buffer) {
		return nil, fmt.Errorf("%w: the certified index is not the one whose public area the evidence shows (its attributes are not these)", ErrNV)
	}
	if info.Offset != 0 || len(info.NVContents.Buffer) != sha256.Size {
		return nil, fmt.Errorf("%w: the certification covers %d bytes at offset %d, not the index's SHA-256 value", ErrNV, len(info.NVContents.Buffer), info.Offset)
	}
	if err := containerlog.CheckPublic(nv); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNVAttrs, err)
	}
	p := &ContainerProof{Index: uint32(nv.NVIndex), Attrs: nvAttrString(nv.Attributes)}
	copy(p.Value[:], info.NVContents.Buffer)
	recs, err := containerlog.Parse(c.Log)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLog, err)
	}
	var from [sha256.Size]byte
	if len(c.From) > 0 {
		if len(c.From) != sha256.Size || len(recs) == 0 {
			return nil, fmt.Errorf("%w: the value before the log is not a SHA-256, or the log is empty", ErrLog)
		}
		copy(from[:], c.From)
		p.First = recs[0].Num
	}
	rp, err := containerlog.ReplayFrom(recs, p.Index, p.First, from)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %s", ErrLog, strings.TrimPrefix(err.Error(), containerlog.ErrReplay.Error()+": "))
	case len(rp.Pending) > 0:
		return nil, fmt.Errorf("%w: %d container records after the last batch are not in the TPM", ErrLog, len(rp.Pending))
	case rp.Value != p.Value:
		return nil, fmt.Errorf("%w: it replays to %s, the certified index holds %s (a record or a batch was dropped, or the log is another's)",
			ErrLog, hex.EncodeToString(rp.Value[:8]), hex.EncodeToString(p.Value[:8]))
	}
	p.Batches, p.Events = rp.Batches, rp.Events
	return p, nil
}

// checkSignature checks sig (a TPMT_SIGNATURE) is the AK's over msg.
func checkSignature(ak *goattest.AKPublic, msg, sigBytes []byte) error {
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return fmt.Errorf("the signature does not parse: %v", err)
	}
	if ak.Hash != crypto.SHA256 {
		return fmt.Errorf("the AK signs with %v, not SHA-256", ak.Hash)
	}
	digest := sha256.Sum256(msg)
	switch pub := ak.Public.(type) {
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return fmt.Errorf("not an ECDSA signature: %v", err)
		}
		if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)) {
			return errors.New("the signature is not the AK's")
		}
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			return fmt.Errorf("not an RSASSA signature: %v", err)
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], s.Sig.Buffer); err != nil {
			return errors.New("the signature is not the AK's")
		}
	default:
		return fmt.Errorf("an AK of type %T", ak.Public)
	}
	return nil
}

// nvAttrString names the index's type and who may write and read it.
func nvAttrString(a tpm2.TPMANV) string {
	s := []string{"extend"}
	if a.NT != tpm2.TPMNTExtend {
		s[0] = fmt.Sprintf("type %d", a.NT)
	}
	for _, f := range []struct {
		set  bool
		name string
	}{{a.AuthWrite, "authwrite"}, {a.OwnerWrite, "ownerwrite"}, {a.PolicyWrite, "policywrite"}, {a.PPWrite, "ppwrite"},
		{a.OwnerRead, "ownerread"}, {a.AuthRead, "authread"}, {a.NoDA, "no_da"}, {a.Orderly, "orderly"}, {a.Written, "written"}} {
		if f.set {
			s = append(s, f.name)
		}
	}
	return fmt.Sprint(s)
}
