// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestRuntimeLinksNoTPM: Docker runs northstar-runtime for every runc
// call (create, start, state, delete, ...). It decides whether the
// engine restarted from the store's record and leaves the rare rotation
// to northstarctl (package lifecycle/rotate), so it links no go-tpm and
// none of the crypto go-tpm pulls, but through one package: hook, whose
// spec policy the agent's mounts share with the hook (through
// hook/agentmounts), and which links the hook's own unseal through
// configured. With that policy in a package of its own, the bypass goes.
func TestRuntimeLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", []string{module + "hook"}, module+"runcwrap", module+"lifecycle/rotate")
}
