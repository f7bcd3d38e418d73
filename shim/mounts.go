// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/agentmounts"
	"github.com/northstar-oci/northstar/hook/entry"
)

// runcShim is the delegate whose runc writes the container's init pid to
// the bundle (control.InitPidFile), which the agent binds the
// registration to.
const runcShim = "containerd-shim-runc-v2"

// withAgentMounts has the agent prepare the container of doc and returns
// config.json with its mounts, or nil when the container needs the hook:
// a delegate other than the runc shim, or agentmounts says so.
func withAgentMounts(ctx context.Context, cfg *config.Config, delegate string, data []byte, doc *entry.Config, id, bundle string) ([]byte, error) {
	if filepath.Base(delegate) != runcShim {
		return nil, nil
	}
	return agentmounts.Config(ctx, cfg, data, doc, id, bundle, logToContainerd)
}
