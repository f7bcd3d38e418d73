package store

import (
	"fmt"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/secretfs/seal"
)

// TPMLockFile serializes access to a socket TPM across processes.
const TPMLockFile = "tpm.lock"

// Open returns the store and sealer described by cfg.
func Open(cfg *config.Config) (*Store, error) {
	s, err := NewSealer(cfg)
	if err != nil {
		return nil, err
	}
	return New(cfg.StateDir, s), nil
}

// NewSealer returns the sealer that cfg selects.
func NewSealer(cfg *config.Config) (seal.Sealer, error) {
	switch cfg.Sealer {
	case config.SealerHost:
		return seal.NewHost(filepath.Join(cfg.StateDir, seal.HostKeyFile)), nil
	case config.SealerTPM:
		return seal.NewTPM(seal.TPMOptions{
			Path:     cfg.TPM.Path,
			PCRs:     cfg.TPM.PCRs,
			LockPath: filepath.Join(cfg.StateDir, TPMLockFile),
		})
	default:
		return nil, fmt.Errorf("unknown sealer %q", cfg.Sealer)
	}
}
