// SPDX-License-Identifier: Apache-2.0

// Package configured is where the config file meets the library: it turns a
// *config.Config into the sealer and the store it describes. The store and
// the sealers never read the config themselves, so they stay usable (and
// testable) with any settings.
package configured

import (
	"fmt"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/seal/tpmseal"
	"github.com/northstar-oci/northstar/store"
)

// Store returns the store and sealer described by cfg.
func Store(cfg *config.Config) (*store.Store, error) {
	s, err := Sealer(cfg)
	if err != nil {
		return nil, err
	}
	return store.New(cfg.StateDir, s), nil
}

// Sealer returns the sealer that cfg selects.
func Sealer(cfg *config.Config) (seal.Sealer, error) {
	switch cfg.Sealer {
	case seal.KindHost:
		return seal.NewHost(filepath.Join(cfg.StateDir, seal.HostKeyFile)), nil
	case seal.KindTPM:
		return tpmseal.New(tpmseal.Options{
			Path:     cfg.TPM.Path,
			PCRs:     cfg.TPM.PCRs,
			LockPath: cfg.TPMLockPath(),
			Timeout:  cfg.TPMTimeout(),
		})
	default:
		return nil, fmt.Errorf("unknown sealer %q", cfg.Sealer)
	}
}
