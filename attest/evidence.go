// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Version is the format of Evidence this package writes and reads.
const Version = 1

// Nonce bounds. A TPM2_Quote's qualifying data is at most a digest's size;
// 32 bytes fits every TPM and is what credential activation hands out.
const (
	MinNonce = 8
	MaxNonce = 32
)

// Evidence is what a host shows a verifier: who its TPM is (the EK
// certificate), a key made in that TPM to speak for it (the AK), the PCRs
// quoted by the AK over the verifier's nonce, and the certification by the
// AK of the host's signing root, a key that never leaves the TPM. Every
// field is checked by Verify; nothing in it is secret.
type Evidence struct {
	Version int `json:"version"`
	// Nonce is the nonce the quote answers (the verifier compares it with
	// its own; it is here so that a human reading the evidence sees it).
	Nonce HexBytes `json:"nonce"`
	// EKCertificate is the DER of the TPM's RSA EK certificate (NV 0x1c00002).
	EKCertificate []byte `json:"ek_certificate"`
	// AK is the attestation key's TPMT_PUBLIC and its creation data,
	// certified by itself at creation (TPM2_CertifyCreation).
	AK Certified `json:"ak"`
	// Quote is TPM2_Quote's TPMS_ATTEST and TPMT_SIGNATURE, over the
	// SHA-256 PCRs 0-23 and the nonce.
	Quote Quote `json:"quote"`
	// PCRs are the SHA-256 PCR values the quote's digest covers.
	PCRs []PCR `json:"pcrs"`
	// Root is the host's signing root: its certificate and the AK's
	// certification of its key (TPM2_Certify).
	Root *Root `json:"root,omitempty"`
	// Containers is the host's measured-container log and the AK's
	// certification of the NV index it replays to (absent: the host
	// measures no containers).
	Containers *Containers `json:"containers,omitempty"`
}

// Containers is the measured-container log (package attest/containerlog)
// up to the batch the NV index holds, the index's public area, and the
// AK's TPM2_NV_Certify of the index over the verifier's nonce.
type Containers struct {
	Log []byte `json:"log"` // TCG CEL
	// From is the index's value before the log's first record, when the
	// log is a tail (evidence carries at most MaxContainerLog bytes of it).
	From          HexBytes `json:"from,omitempty"`
	NVPublic      []byte   `json:"nv_public"`     // TPMS_NV_PUBLIC
	Certification Quote    `json:"certification"` // TPMS_ATTEST, TPMT_SIGNATURE
}

// Certified is a TPM key's public area with the TPM's statement about it:
// for the AK its creation (TPM2_CertifyCreation), for the root key its
// certification by the AK (TPM2_Certify).
type Certified struct {
	Public            []byte `json:"public"`             // TPMT_PUBLIC
	CreateData        []byte `json:"create_data"`        // TPMS_CREATION_DATA
	CreateAttestation []byte `json:"create_attestation"` // TPMS_ATTEST
	CreateSignature   []byte `json:"create_signature"`   // TPMT_SIGNATURE
}

// Quote is a TPM2_Quote.
type Quote struct {
	Attest    []byte `json:"attest"`    // TPMS_ATTEST
	Signature []byte `json:"signature"` // TPMT_SIGNATURE
}

// PCR is one SHA-256 PCR's value.
type PCR struct {
	Index  int      `json:"index"`
	SHA256 HexBytes `json:"sha256"`
}

// Root is the host's signing root.
type Root struct {
	// Certificate is the DER of the root's self-signed X.509 certificate.
	Certificate []byte `json:"certificate"`
	// Certification is the AK's TPM2_Certify of the root's key.
	Certification Certified `json:"certification"`
}

// HexBytes is bytes written as lowercase hex in JSON.
type HexBytes []byte

func (h HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*h = v
	return nil
}

// CheckNonce checks a verifier's nonce is of a size a quote can carry.
func CheckNonce(nonce []byte) error {
	if len(nonce) < MinNonce || len(nonce) > MaxNonce {
		return fmt.Errorf("a nonce is %d to %d bytes (%d to %d hex digits), this one is %d bytes",
			MinNonce, MaxNonce, 2*MinNonce, 2*MaxNonce, len(nonce))
	}
	return nil
}

// MaxContainerLog bounds the container log evidence carries: the log
// grows with every container, so evidence carries its tail (from a batch
// on), which proves what it shows as the whole log would.
const MaxContainerLog = 512 << 10

// MaxEvidence bounds the evidence ParseEvidence reads: an EK certificate,
// two public areas, a quote and a root certificate are a few KiB.
const MaxEvidence = 1 << 20

// ParseEvidence decodes evidence as Evidence's JSON, refusing what is not.
func ParseEvidence(b []byte) (*Evidence, error) {
	if len(b) > MaxEvidence {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrParse, len(b), MaxEvidence)
	}
	var ev Evidence
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrParse, err)
	}
	if ev.Version != Version {
		return nil, fmt.Errorf("%w: version %d, this northstarctl reads version %d", ErrParse, ev.Version, Version)
	}
	return &ev, nil
}
