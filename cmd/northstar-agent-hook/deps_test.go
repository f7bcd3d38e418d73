// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestAgentHookLinksLittle: northstar-agent-hook runs on every container
// start on a host with the agent, which does the hook's work; its process
// costs what it links (package initialisation, page faults:
// docs/performance.md). So it links no TPM code, and none of the hook's
// work either: not the hook, its mounts, the store or the control
// socket's other requests.
func TestAgentHookLinksLittle(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", module+"hook/agenthook", module+"agent/control/hookstart")
	deps := testenv.Deps(t, ".")
	for _, p := range []string{"hook", "hook/delivery", "secretfs/mount", "store", "agent/control", "agent/registry"} {
		if deps[module+p] {
			t.Errorf("northstar-agent-hook links %s%s", module, p)
		}
	}
}
