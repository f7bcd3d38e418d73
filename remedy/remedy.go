// SPDX-License-Identifier: Apache-2.0

// Package remedy turns the errors a user can fix into the sentence that says
// how. The library packages (seal, store) return sentinel errors and say
// what went wrong; only the front ends (the hook, northstarctl, the shim)
// call Explain, so a remedy is written once and names the right command.
package remedy

import (
	"errors"
	"fmt"

	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/store"
)

// Commands the remedies name.
const (
	Init        = "run 'northstarctl init'"
	Rotate      = "run 'northstarctl rotate'"
	Reprovision = "if the TPM was cleared or replaced on purpose, run 'northstarctl rotate --new-srk'; otherwise find what answers at [tpm] path"
)

// rules map sentinel errors to what the user runs, first match wins.
var rules = []struct {
	err error
	fix string
}{
	{store.ErrNotInitialized, Init},
	// Checked before ErrWrongKey: a changed SRK is never healed by a plain
	// rotate, which pins the old one.
	{seal.ErrSRKChanged, Reprovision},
	// The sealed secret cannot be recovered: a new one is the way out.
	{seal.ErrPCRChanged, Rotate},
	{seal.ErrPCRSelection, Rotate + " to seal to the configured PCRs"},
	{seal.ErrWrongKey, Rotate},
	{seal.ErrNoKey, Rotate},
	{seal.ErrCorrupt, Rotate},
	{seal.ErrUnknownVersion, Rotate + " (or run the northstar that wrote it)"},
	{store.ErrSealerMismatch, Rotate},
}

// For returns the remedy for err, or "" when err is not one a command fixes.
func For(err error) string {
	for _, r := range rules {
		if errors.Is(err, r.err) {
			return r.fix
		}
	}
	return ""
}

// Explain returns err with its remedy appended ("...; run 'northstarctl
// rotate'"), or err itself when it has none. The result wraps err.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	fix := For(err)
	if fix == "" {
		return err
	}
	return fmt.Errorf("%w; %s", err, fix)
}
