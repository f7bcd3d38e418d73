// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// noTPM turns "tpm: open /dev/tpmrm0: no such file or directory", on a
// host without a TPM device, into one line naming the ways on; other
// errors pass through.
func noTPM(cfg *config.Config, err error) error {
	if cfg == nil || cfg.Sealer != config.SealerTPM || strings.Contains(cfg.TPM.Path, ":") ||
		!errors.Is(err, tpmconn.ErrUnreachable) || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return &noTPMError{err: err, msg: fmt.Sprintf("no TPM at %s: use a TPM 2.0 (on in the firmware, the kernel makes the device), "+
		"or run swtpm and set [tpm] path = \"unix:/path/to/swtpm.sock\" in %s, "+
		"or set sealer = \"host\" there: a key file in %s seals the secret instead, which root or a copy of the disk opens, bound to no TPM or boot state",
		cfg.TPM.Path, cfg.Path, cfg.StateDir)}
}

// noTPMError is the one line of noTPM; it wraps the TPM's error.
type noTPMError struct {
	err error
	msg string
}

func (e *noTPMError) Error() string { return e.msg }
func (e *noTPMError) Unwrap() error { return e.err }
