// SPDX-License-Identifier: Apache-2.0

package nri

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/containerd/nri/pkg/api"
	"google.golang.org/protobuf/proto"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/rootfsid"
	"github.com/northstar-oci/northstar/secretfs"
)

// measurer is a Deliverer that logs deliveries in the measured-container
// log (the agent's registry with [measure] enable).
type measurer interface {
	// Measured gives what was measured of a prepared container; Bind
	// logs it with the delivery.
	Measured(id string, m control.Measurement)
}

// ConfigDigest is the SHA-256 of what NRI says of the container at
// StartContainer: the Container message in protobuf's deterministic
// encoding, without the fields that describe its run rather than its
// configuration (state, pid, times, exit status). It is the container the
// runtime created, every plugin's adjustment (northstar's own mounts)
// included.
func ConfigDigest(ctr *api.Container) (string, error) {
	c := proto.Clone(ctr).(*api.Container)
	c.State, c.Pid = 0, 0
	c.CreatedAt, c.StartedAt, c.FinishedAt, c.ExitCode = 0, 0, 0, 0
	c.StatusReason, c.StatusMessage = "", ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("the container's configuration: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// measure hands the registry what identifies container ctr, created
// with its process pid: the configuration's digest, and its root
// filesystem as its init process sees it.
func (p *plugin) measure(ctr *api.Container, pid int) error {
	m, ok := p.deliver.(measurer)
	if !ok || !mountsSecret(ctr) {
		return nil
	}
	digest, err := ConfigDigest(ctr)
	if err != nil {
		return err
	}
	root, err := rootfsid.Of(fmt.Sprintf("/proc/%d/root", pid), fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return fmt.Errorf("the container's root filesystem: %w", err)
	}
	m.Measured(ctr.GetId(), control.Measurement{Config: digest, Rootfs: root})
	return nil
}

// mountsSecret reports whether ctr has the secret's mount (it was
// prepared: a delivery).
func mountsSecret(ctr *api.Container) bool {
	for _, m := range ctr.GetMounts() {
		if m.GetDestination() == secretfs.Dir {
			return true
		}
	}
	return false
}
