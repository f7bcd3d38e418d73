// SPDX-License-Identifier: Apache-2.0

// Package seal protects the lifecycle secret at rest. A Sealer turns the raw
// secret into an opaque blob that only this host (and, for the TPM sealer,
// only this TPM in the configured measured-boot state) can turn back.
//
// Two sealers: the TPM's (package tpmseal: a policy-bound object under the
// TPM's storage root key; how the TPM is reached is package tpmconn's job)
// and Host (AES-GCM under a key file, for hosts without a TPM). Blobs are
// self-describing: Describe tells which sealer made one and what protects
// it, without unsealing. This package does not link go-tpm, so that what
// only reads records (the hook that the agent serves) does not pay for it.
// Errors are sentinels (ErrPCRChanged, ErrWrongKey, ...) that say what went
// wrong; what the user should run is added by package remedy.
package seal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sealer kinds, as the config's "sealer" key and the record name them.
const (
	KindTPM  = "tpm"
	KindHost = "host"
)

// Sealer seals and unseals the lifecycle secret. Implementations must not
// log, print or return the plaintext in errors.
type Sealer interface {
	// Name is the sealer kind as written in the config ("tpm", "host").
	Name() string
	// Seal returns an opaque, self-describing (versioned) blob for plaintext.
	Seal(ctx context.Context, plaintext []byte) ([]byte, error)
	// Unseal returns the plaintext of a blob made by Seal. The caller owns
	// and zeroes the returned slice.
	Unseal(ctx context.Context, blob []byte) ([]byte, error)
}

// KeyPinner is implemented by sealers whose key could be substituted by
// whoever sits between northstar and the key (a TPM's SRK): SealPinned
// seals only under the key that sealed prev, an earlier blob of the same
// sealer. The store pins every seal after the first.
type KeyPinner interface {
	SealPinned(ctx context.Context, plaintext, prev []byte) ([]byte, error)
}

// Errors a caller must tell apart. Sealers wrap them with the detail.
var (
	// ErrCorrupt: the blob is truncated, tampered with or not a blob.
	ErrCorrupt = errors.New("sealed blob is corrupt or truncated")
	// ErrUnknownVersion: the blob was written by a newer northstar.
	ErrUnknownVersion = errors.New("sealed blob has an unknown format version")
	// ErrWrongKey: the blob was sealed under another key, SRK or TPM.
	ErrWrongKey = errors.New("sealed blob belongs to another key or TPM")
	// ErrPCRChanged: the PCRs the blob is bound to changed since sealing.
	ErrPCRChanged = errors.New("the sealed secret is bound to PCRs that changed since it was sealed")
	// ErrPCRSelection: the blob is bound to another set of PCRs than the
	// configured one (the config changed since it was sealed).
	ErrPCRSelection = errors.New("the sealed secret is bound to other PCRs than [tpm] pcrs")
	// ErrSRKChanged: the TPM reports another storage root key than the one
	// the current secret was sealed under (a cleared or replaced TPM, or
	// something posing as the TPM); nothing was sealed.
	ErrSRKChanged = errors.New("the TPM's storage root key is not the one the secret was sealed under")
	// ErrNoKey: the sealing key (host key file, TPM) is not available.
	ErrNoKey = errors.New("sealing key is not available")
)

// MaxPCR is the highest PCR index: PC Client TPMs have 24 PCRs per bank.
const MaxPCR = 23

// CheckPCRs checks a list of PCR indices: each in 0-MaxPCR, none twice.
func CheckPCRs(pcrs []int) error {
	seen := make(map[int]bool, len(pcrs))
	for _, p := range pcrs {
		if p < 0 || p > MaxPCR {
			return fmt.Errorf("PCR %d out of range 0-%d", p, MaxPCR)
		}
		if seen[p] {
			return fmt.Errorf("PCR %d listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// FormatPCRs formats PCR indices for people: "7,16", or "none".
func FormatPCRs(pcrs []int) string {
	if len(pcrs) == 0 {
		return "none"
	}
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// checkHeader checks the 4-byte header every blob starts with: 3 bytes of
// magic naming the sealer and a format version byte. kind names the blob in
// errors.
func checkHeader(blob, magic []byte, kind string) error {
	if len(blob) < len(magic) || !bytes.Equal(blob[:3], magic[:3]) {
		return fmt.Errorf("%w (not a %s blob)", ErrCorrupt, kind)
	}
	if blob[3] != magic[3] {
		return fmt.Errorf("%w %d", ErrUnknownVersion, blob[3])
	}
	return nil
}

// Description is what a blob says about how it is protected, read without
// unsealing it (for `northstarctl status`).
type Description struct {
	Kind string // KindTPM or KindHost
	// Protection says in a few words what a copy of the state directory
	// would reveal.
	Protection string
	// For TPM blobs: the PCRs the secret is bound to and the name of the
	// SRK it was sealed under.
	PCRs    []int
	SRKName []byte
}

// Describe tells which sealer made blob and what protects it. Blobs are
// self-describing (their magic), so no sealer needs to be configured.
func Describe(blob []byte) (*Description, error) {
	switch {
	case bytes.HasPrefix(blob, tpmMagic[:3]):
		b, err := DecodeTPMBlob(blob)
		if err != nil {
			return nil, err
		}
		return &Description{
			Kind:       KindTPM,
			Protection: "TPM 2.0 sealed (FixedTPM|FixedParent), PCRs " + FormatPCRs(b.PCRs),
			PCRs:       b.PCRs,
			SRKName:    b.SRKName,
		}, nil
	case bytes.HasPrefix(blob, hostMagic[:3]):
		if err := checkHeader(blob, hostMagic, "host-key"); err != nil {
			return nil, err
		}
		return &Description{
			Kind:       KindHost,
			Protection: "host key file only: a copy of the state directory reveals the secret (no TPM protection)",
		}, nil
	}
	return nil, fmt.Errorf("%w (not a sealed blob of any known sealer)", ErrCorrupt)
}
