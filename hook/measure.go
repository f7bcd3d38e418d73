// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/rootfsid"
)

// measurement is what the agent's measured-container log records of the
// container ([measure] enable): the SHA-256 of the config.json bytes the
// hook read, and its root filesystem's identity (internal/rootfsid),
// seen from the runtime's mount namespace, where the hook runs. A rootfs
// that cannot be named is logged as such, not a failed start.
func measurement(config []byte, rootfs string) *control.Measurement {
	sum := sha256.Sum256(config)
	id, err := rootfsid.Of(rootfs, "/proc/self/mountinfo")
	if err != nil {
		id = "unknown: " + err.Error()
	}
	return &control.Measurement{Config: hex.EncodeToString(sum[:]), Rootfs: id}
}
