// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
	"time"
)

// Measure is the measured-container log (docs/attestation.md): every
// delivery of the secret by the agent is logged, and the log's batches
// are extended into a TPM NV index only the agent can write.
type Measure struct {
	// Enable turns it on. Off by default: each batch is an NV write, and
	// a discrete TPM's NV endures a bounded number of writes; it needs
	// sealer = "tpm" and [rotation] live (the agent delivers the secret).
	Enable bool `toml:"enable"`
	// NVIndex is the NV index (0 is 0x014e5327, in the owner's range).
	NVIndex uint32 `toml:"nv_index"`
	// Interval is how long the agent gathers deliveries into one batch,
	// one NV write ("" is "1s"; 10ms-1m).
	Interval string `toml:"interval"`
}

const (
	defaultMeasureInterval = time.Second
	minMeasureInterval     = 10 * time.Millisecond
	maxMeasureInterval     = time.Minute
	// The owner's NV index range (TCG's handle registry).
	minOwnerNV = 0x01000000
	maxOwnerNV = 0x013fffff
)

// MeasureInterval returns the validated [measure] interval.
func (c *Config) MeasureInterval() time.Duration {
	return durationOr(c.Measure.Interval, defaultMeasureInterval)
}

func (c *Config) validateMeasure() error {
	m := &c.Measure
	if m.Interval != "" {
		if d, err := time.ParseDuration(m.Interval); err != nil || d < minMeasureInterval || d > maxMeasureInterval {
			return fmt.Errorf("[measure] interval %q: want a duration from %v to %v", m.Interval, minMeasureInterval, maxMeasureInterval)
		}
	}
	if m.NVIndex != 0 && (m.NVIndex < minOwnerNV || m.NVIndex > maxOwnerNV) {
		return fmt.Errorf("[measure] nv_index %#x: want an index in the owner's range %#x-%#x", m.NVIndex, minOwnerNV, maxOwnerNV)
	}
	if !m.Enable {
		return nil
	}
	switch {
	case c.Sealer != SealerTPM:
		return fmt.Errorf("[measure] enable needs sealer = %q: the log is extended into the TPM", SealerTPM)
	case !c.Rotation.Live || c.Agent.Socket == "":
		return errors.New("[measure] enable needs the agent to deliver the secret: [agent] socket and [rotation] live = true")
	}
	return nil
}
