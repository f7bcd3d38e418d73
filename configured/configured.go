// SPDX-License-Identifier: Apache-2.0

// Package configured is where the config file meets the library: it turns a
// *config.Config into the sealer and the store it describes. The store and
// the sealers never read the config themselves, so they stay usable (and
// testable) with any settings.
package configured

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/lifecycle"
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

// RotateIfRuntimeRestarted starts a new secret lifecycle when runtimePid
// is not the runtime process the stored secret was made for (the shim's
// containerd, the Docker runtime wrapper's engine). Many callers starting
// at once rotate exactly once: the store decides under its lock. note is
// the one line to log when something changed, "" when nothing did.
func RotateIfRuntimeRestarted(ctx context.Context, cfg *config.Config, runtimePid int) (note string, err error) {
	id, err := lifecycle.ID(runtimePid)
	if err != nil {
		return "", fmt.Errorf("lifecycle id: %w", err)
	}
	st, err := Store(cfg)
	if err != nil {
		return "", fmt.Errorf("open store: %w", err)
	}
	rec, change, err := st.RotateIfLifecycleChanged(ctx, id)
	if err != nil {
		return "", fmt.Errorf("rotate lifecycle secret: %w", err)
	}
	switch change {
	case store.Rotated:
		return fmt.Sprintf("northstar: runtime restarted, new lifecycle secret generation=%d lifecycle_id=%q config=%q",
			rec.Generation, rec.LifecycleID, cfg.Path), nil
	case store.Adopted:
		return fmt.Sprintf("northstar: secret generation=%d adopted for this runtime lifecycle lifecycle_id=%q config=%q",
			rec.Generation, rec.LifecycleID, cfg.Path), nil
	}
	return "", nil
}
