// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"crypto/x509"
	"encoding/json"
	"fmt"

	goattest "github.com/google/go-attestation/attest"
)

// Challenge is a verifier's credential activation challenge: a secret
// encrypted to one EK, releasable only by the TPM holding that EK, and
// only to the AK whose public area it names. The host answers with
// evidence quoted over the secret (Attester.Answer), so a verifier who
// kept the secret to itself learns that the AK is in the TPM of the EK.
type Challenge struct {
	// AK is the challenged AK's TPMT_PUBLIC.
	AK []byte `json:"ak"`
	// EK is the challenged EK (PKIX DER), for the verifier to compare.
	EK         []byte `json:"ek"`
	Credential []byte `json:"credential"`
	Secret     []byte `json:"secret"`
}

// NewChallenge makes a challenge for the AK and EK of ev (earlier evidence
// from the host) and returns it with its secret, the nonce the answer must
// quote. It checks the AK is a TPM-made restricted key first; it does not
// check the EK certificate (Verify does).
func NewChallenge(ev *Evidence) (*Challenge, []byte, error) {
	ek, err := goattest.ParseEKCertificate(ev.EKCertificate)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the EK certificate: %v", ErrParse, err)
	}
	ap := goattest.ActivationParameters{
		EK: ek.PublicKey,
		AK: goattest.AttestationParameters{Public: ev.AK.Public, CreateData: ev.AK.CreateData,
			CreateAttestation: ev.AK.CreateAttestation, CreateSignature: ev.AK.CreateSignature},
	}
	secret, ec, err := ap.Generate()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAK, err)
	}
	ekDER, err := x509.MarshalPKIXPublicKey(ek.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return &Challenge{AK: ev.AK.Public, EK: ekDER, Credential: ec.Credential, Secret: ec.Secret}, secret, nil
}

// ParseChallenge decodes a Challenge's JSON.
func ParseChallenge(b []byte) (*Challenge, error) {
	var ch Challenge
	if err := json.Unmarshal(b, &ch); err != nil {
		return nil, fmt.Errorf("the challenge does not parse: %w", err)
	}
	if len(ch.AK) == 0 || len(ch.EK) == 0 || len(ch.Credential) == 0 || len(ch.Secret) == 0 {
		return nil, fmt.Errorf("the challenge lacks its AK, EK, credential or secret")
	}
	return &ch, nil
}
