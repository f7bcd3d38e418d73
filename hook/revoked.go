// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
)

// checkRevoked fails the start of a container whose id a rotation revoked
// (northstarctl rotate --revoke) and no one lifted since: a container
// restarted under that id (podman --restart=always, runc delete and run)
// would otherwise get the new secret and its API back. The agent refuses
// its registration too; this covers the starts that do not register
// (no API, no live rotation), which take the secret from the store.
//
// A record that cannot be read here is not a pass: every start that
// takes the secret reads it again and fails; an API-only start is
// checked by the agent.
func checkRevoked(cfg *config.Config, id string) error {
	st, err := configured.Store(cfg)
	if err != nil {
		return nil
	}
	rec, err := st.Current()
	if err != nil {
		return nil
	}
	return rec.CheckNotRevoked(id)
}
