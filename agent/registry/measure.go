// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"encoding/hex"
	"fmt"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/attest/containerlog"
)

// Measurer records each delivery of the secret in the measured-container
// log (agent/measure.Log). Append must not wait for the TPM.
type Measurer interface {
	Append(containerlog.Event) error
}

// Measure makes every later delivery of the secret recorded by m.
func (c *Containers) Measure(m Measurer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.measurer = m
}

// Measured gives what the NRI plugin measured of container id, prepared
// and not yet bound: Bind logs it with the delivery.
func (c *Containers) Measured(id string, m control.Measurement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.prepared[id]; p != nil {
		p.measured = &m
	}
}

// measure logs a delivery to reg via how, with what was measured of it
// (nil: nothing; the event says so with a zero digest). What the log
// cannot record does not happen: the caller fails the delivery.
func (c *Containers) measure(reg control.Registration, via string, m *control.Measurement) error {
	c.mu.Lock()
	mr := c.measurer
	c.mu.Unlock()
	if mr == nil {
		return nil
	}
	e := containerlog.Event{ID: reg.ID, Identity: reg.Identity, Via: via}
	if m != nil {
		if d, err := hex.DecodeString(m.Config); err == nil && len(d) == len(e.Config) {
			copy(e.Config[:], d)
		} else {
			return fmt.Errorf("the measurement's config digest %q is not a SHA-256", m.Config)
		}
		e.Rootfs = m.Rootfs
	}
	if err := mr.Append(e); err != nil {
		return fmt.Errorf("measured-container log: %w", err)
	}
	return nil
}
