// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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

// MeasureStatus is the measured-container log as `status` reads it (the
// log alone: what the TPM holds, `attest` shows).
type MeasureStatus struct {
	Log        string `json:"log"`
	Index      uint32 `json:"nv_index"`
	Containers int    `json:"containers"` // in a batch
	Batches    int    `json:"batches"`
	Pending    int    `json:"pending"` // not in a batch yet
	Error      string `json:"error,omitempty"`
}

func measureStatus(cfg *config.Config) *MeasureStatus {
	m := &MeasureStatus{Log: filepath.Join(cfg.StateDir, measure.FileName), Index: measureIndex(cfg)}
	b, err := os.ReadFile(m.Log)
	if errors.Is(err, os.ErrNotExist) {
		m.Error = "no log yet at " + m.Log + " (is the agent running?)"
		return m
	}
	if err != nil {
		m.Error = err.Error()
		return m
	}
	recs, err := containerlog.Parse(b)
	if err != nil && !errors.Is(err, containerlog.ErrTruncated) { // a record being appended
		m.Error = fmt.Sprintf("the log %s: %v", m.Log, err)
		return m
	}
	rp, err := containerlog.Replay(recs, m.Index)
	if err != nil {
		m.Error = fmt.Sprintf("the log %s: %v", m.Log, err)
		return m
	}
	m.Containers, m.Batches, m.Pending = len(rp.Events), rp.Batches, len(rp.Pending)
	return m
}
