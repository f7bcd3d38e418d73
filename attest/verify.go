// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	goattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"
)

// What Verify refuses, each the first failure it meets, in this order.
var (
	ErrParse      = errors.New("the evidence does not parse")
	ErrWrongEK    = errors.New("wrong EK")
	ErrAK         = errors.New("the AK is not a key made in a TPM")
	ErrWrongNonce = errors.New("wrong nonce")
	ErrQuote      = errors.New("the quote is not signed by this AK over these PCRs")
	ErrPCR        = errors.New("PCR mismatch")
	ErrRoot       = errors.New("the root is not certified by this AK")
	ErrNV         = errors.New("the NV index is not certified by this AK")
	ErrNVAttrs    = errors.New("the NV index's attributes allow others to write it")
	ErrLog        = errors.New("the container log does not replay")
)

// Policy is what the verifier expects of evidence.
type Policy struct {
	// Nonce is the verifier's nonce (or a Challenge's secret).
	Nonce []byte
	// EKRoots (with EKIntermediates) are the TPM manufacturers' CAs the EK
	// certificate must chain to.
	EKRoots, EKIntermediates *x509.CertPool
	// EK, when set, is the one EK (PKIX DER of its public key) accepted.
	EK []byte
	// PCRs are the SHA-256 values the quoted PCRs must have.
	PCRs map[int][]byte
	// Challenge, when set, is the challenge whose secret is Nonce: the
	// evidence's AK and EK must be the ones it was made for.
	Challenge *Challenge
	// Now is the time the EK certificate is checked at (time.Now if zero).
	Now time.Time
	// Containers requires the measured-container log: evidence without
	// one is refused (a host that measures cannot leave it out).
	Containers bool
}

// Proof is what verified evidence shows.
type Proof struct {
	EK        *x509.Certificate
	AK        []byte // TPMT_PUBLIC
	AKBound   bool   // the AK was shown to be in the EK's TPM (a challenge)
	PCRs      []PCR  // quoted, so as the TPM holds them
	Checked   []int  // the PCRs the policy named
	Root      *x509.Certificate
	RootAttrs string
	// Containers is the measured-container log's proof (nil: the
	// evidence has none).
	Containers *ContainerProof
}

// Verify checks ev against p and returns what it proves, or the first
// failure as an error wrapping one of the Err values above.
func Verify(ev *Evidence, p Policy) (*Proof, error) {
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	if ev.Version != Version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrParse, ev.Version, Version)
	}
	// The EK: a TPM made by a manufacturer we trust, the one we expect.
	ek, err := VerifyEKCertificate(ev.EKCertificate, p.EKRoots, p.EKIntermediates, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWrongEK, err)
	}
	ekDER, err := x509.MarshalPKIXPublicKey(ek.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: the EK's public key: %v", ErrWrongEK, err)
	}
	if p.EK != nil && !bytes.Equal(ekDER, p.EK) {
		return nil, fmt.Errorf("%w: the evidence's EK is %s, the expected one %s (another TPM, or this host's TPM was replaced)",
			ErrWrongEK, fingerprint(ekDER), fingerprint(p.EK))
	}
	if c := p.Challenge; c != nil {
		if !bytes.Equal(ekDER, c.EK) {
			return nil, fmt.Errorf("%w: the evidence's EK is %s, the challenge was made for %s", ErrWrongEK, fingerprint(ekDER), fingerprint(c.EK))
		}
		if !bytes.Equal(ev.AK.Public, c.AK) {
			return nil, fmt.Errorf("%w: the evidence's AK is %s, the challenge was made for %s", ErrAK, fingerprint(ev.AK.Public), fingerprint(c.AK))
		}
	}
	// The AK: restricted, made in a TPM, never to leave it.
	ap := goattest.ActivationParameters{EK: ek.PublicKey, AK: goattest.AttestationParameters{
		Public: ev.AK.Public, CreateData: ev.AK.CreateData, CreateAttestation: ev.AK.CreateAttestation, CreateSignature: ev.AK.CreateSignature}}
	if err := ap.CheckAKParameters(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAK, err)
	}
	akPub, err := goattest.ParseAKPublic(ev.AK.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAK, err)
	}
	// The quote: our nonce, signed by the AK, over these PCR values.
	att, err := tpm2.DecodeAttestationData(ev.Quote.Attest)
	if err != nil {
		return nil, fmt.Errorf("%w: the quote: %v", ErrParse, err)
	}
	if !bytes.Equal(att.ExtraData, p.Nonce) {
		return nil, fmt.Errorf("%w: the quote answers nonce %s, not %s (replayed, or made for another verifier)",
			ErrWrongNonce, hex.EncodeToString(att.ExtraData), hex.EncodeToString(p.Nonce))
	}
	pcrs := make([]goattest.PCR, 0, len(ev.PCRs))
	for _, v := range ev.PCRs {
		pcrs = append(pcrs, goattest.PCR{Index: v.Index, Digest: v.SHA256, DigestAlg: crypto.SHA256})
	}
	if err := akPub.Verify(goattest.Quote{Quote: ev.Quote.Attest, Signature: ev.Quote.Signature}, pcrs, p.Nonce); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuote, err)
	}
	quoted := map[int][]byte{}
	for _, v := range pcrs {
		if v.QuoteVerified() {
			quoted[v.Index] = v.Digest
		}
	}
	var checked []int
	for i, want := range p.PCRs {
		got, ok := quoted[i]
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: PCR %d is not in the quote", ErrPCR, i)
		case !bytes.Equal(got, want):
			return nil, fmt.Errorf("%w: PCR %d is %s, the policy wants %s", ErrPCR, i, hex.EncodeToString(got), hex.EncodeToString(want))
		}
		checked = append(checked, i)
	}
	slices.Sort(checked)
	proof := &Proof{EK: ek, AK: ev.AK.Public, AKBound: p.Challenge != nil, Checked: checked}
	for _, v := range pcrs {
		if v.QuoteVerified() {
			proof.PCRs = append(proof.PCRs, PCR{Index: v.Index, SHA256: v.Digest})
		}
	}
	// The root: a key the TPM made and will not let out, certified by the AK,
	// and the certificate is of that key.
	if ev.Root == nil {
		return nil, fmt.Errorf("%w: the evidence has no root", ErrRoot)
	}
	root, attrs, err := verifyRoot(ev.Root, akPub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRoot, err)
	}
	proof.Root, proof.RootAttrs = root, attrs
	switch {
	case ev.Containers != nil:
		if proof.Containers, err = verifyContainers(ev.Containers, akPub, p.Nonce); err != nil {
			return nil, err
		}
	case p.Containers:
		return nil, fmt.Errorf("%w: the evidence carries none (is [measure] enable on at the host?)", ErrLog)
	}
	return proof, nil
}

// VerifyRoot checks r as Verify does, against the AK whose TPMT_PUBLIC is
// akPublic, and returns the root certificate and the certified key's
// attributes.
func VerifyRoot(r *Root, akPublic []byte) (*x509.Certificate, string, error) {
	ak, err := goattest.ParseAKPublic(akPublic)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrAK, err)
	}
	cert, attrs, err := verifyRoot(r, ak)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrRoot, err)
	}
	return cert, attrs, nil
}

// verifyRoot checks the AK certified the root's key as TPM-resident and
// the root certificate is a self-signed CA certificate of that key.
func verifyRoot(r *Root, ak *goattest.AKPublic) (*x509.Certificate, string, error) {
	cp := goattest.CertificationParameters{Public: r.Certification.Public, CreateData: r.Certification.CreateData,
		CreateAttestation: r.Certification.CreateAttestation, CreateSignature: r.Certification.CreateSignature}
	if err := cp.Verify(goattest.VerifyOpts{Public: ak.Public, Hash: ak.Hash}); err != nil {
		return nil, "", err
	}
	pub, err := tpm2.DecodePublic(r.Certification.Public)
	if err != nil {
		return nil, "", err
	}
	if pub.Type != tpm2.AlgECC || pub.ECCParameters.CurveID != tpm2.CurveNISTP256 {
		return nil, "", errors.New("the certified key is not ECC P-256")
	}
	key, err := pub.Key()
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(r.Certificate)
	if err != nil {
		return nil, "", fmt.Errorf("the root certificate does not parse: %v", err)
	}
	ck, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !ck.Equal(key) {
		return nil, "", errors.New("the root certificate's key is not the certified TPM key")
	}
	if !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
		return nil, "", errors.New("the root certificate is not a CA certificate signed by its own key")
	}
	return cert, attrString(pub.Attributes), nil
}

// attrString names the attributes that keep a key in its TPM.
func attrString(a tpm2.KeyProp) string {
	var s []string
	for _, f := range []struct {
		flag tpm2.KeyProp
		name string
	}{{tpm2.FlagFixedTPM, "fixedTPM"}, {tpm2.FlagFixedParent, "fixedParent"}, {tpm2.FlagSensitiveDataOrigin, "sensitiveDataOrigin"},
		{tpm2.FlagSign, "sign"}, {tpm2.FlagRestricted, "restricted"}, {tpm2.FlagUserWithAuth, "userWithAuth"}} {
		if a&f.flag != 0 {
			s = append(s, f.name)
		}
	}
	return fmt.Sprint(s)
}
