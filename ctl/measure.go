// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/northstar-oci/northstar/agent"
	"github.com/northstar-oci/northstar/agent/measure"
	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// measureIndex is [measure] nv_index, or the default.
func measureIndex(cfg *config.Config) uint32 {
	if cfg.Measure.NVIndex != 0 {
		return cfg.Measure.NVIndex
	}
	return containerlog.DefaultIndex
}

// openMeasure opens the agent's measured-container log ([measure]
// enable): the index's authValue is a key the agent keeps sealed in the
// store, unsealed in a child like its other keys.
func openMeasure(ctx context.Context, cfg *config.Config, loadKey agent.KeyLoader, log io.Writer) (*measure.Log, error) {
	auth := make([]byte, measure.AuthSize)
	defer clear(auth)
	if err := loadKey(ctx, measure.KeyName, auth); err != nil {
		return nil, fmt.Errorf("measure: the NV index's key: %w", err)
	}
	return measure.Open(ctx, measure.Options{
		TPM:      tpmconn.Options{Path: cfg.TPM.Path, LockPath: cfg.TPMLockPath()},
		Timeout:  cfg.TPMTimeout(),
		Index:    measureIndex(cfg),
		Auth:     auth,
		Path:     filepath.Join(cfg.StateDir, measure.FileName),
		Interval: cfg.MeasureInterval(),
		Log:      log,
	})
}
