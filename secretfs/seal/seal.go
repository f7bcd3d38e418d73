// Package seal protects the lifecycle secret at rest. A Sealer turns the raw
// secret into an opaque blob that only this host (and, for the TPM sealer,
// only this TPM in the configured measured-boot state) can turn back.
package seal

import (
	"context"
	"errors"
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
	// ErrNoKey: the sealing key (host key file, TPM) is not available.
	ErrNoKey = errors.New("sealing key is not available")
)
