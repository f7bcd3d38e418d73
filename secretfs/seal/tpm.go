package seal

import (
	"context"
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// TPMOptions configures the TPM sealer.
type TPMOptions struct {
	// Path is "/dev/tpmrm0" (any device path), "unix:/path" (swtpm unixio)
	// or "tcp:host:port" (swtpm data port).
	Path string
	// PCRs (sha256 bank) the sealed object's policy is bound to; empty means
	// a PCR-less policy (still policy-only, never password-authorized).
	PCRs []int
	// LockPath is a file locked around every TPM conversation, so processes
	// sharing a socket TPM take turns. Empty disables locking.
	LockPath string
	// Open overrides how the transport is opened (tests inject a simulator).
	Open func() (transport.TPMCloser, error)
}

// TPM seals the secret to a TPM 2.0. PLACEHOLDER: implemented in the TPM issue.
type TPM struct{ opts TPMOptions }

var _ Sealer = (*TPM)(nil)

// NewTPM returns a TPM sealer.
func NewTPM(opts TPMOptions) (*TPM, error) { return &TPM{opts: opts}, nil }

// Name implements Sealer.
func (*TPM) Name() string { return "tpm" }

// Seal implements Sealer.
func (*TPM) Seal(context.Context, []byte) ([]byte, error) { return nil, errors.New("not implemented") }

// Unseal implements Sealer.
func (*TPM) Unseal(context.Context, []byte) ([]byte, error) { return nil, errors.New("not implemented") }
