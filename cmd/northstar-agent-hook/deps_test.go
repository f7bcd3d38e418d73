// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestAgentHookLinksLittle: northstar-agent-hook runs on every container
// start on a host with the agent, which does the hook's work; its process
// costs what it links (package initialisation, page faults:
// docs/performance.md). So it links no TPM code, none of the hook's work
// (the hook, its mounts, the store, the control socket's other requests,
// the whole config) and not net or encoding/json, whose initialisation
// and first use cost more than its whole exchange with the agent.
func TestAgentHookLinksLittle(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", module+"hook/agenthook", module+"agent/control/hookstart")
	deps := testenv.Deps(t, ".")
	for _, p := range []string{module + "hook", module + "hook/delivery", module + "hook/entry", module + "secretfs/mount", module + "store",
		module + "agent/control", module + "agent/registry", module + "config", "net", "encoding/json"} {
		if deps[p] {
			t.Errorf("northstar-agent-hook links %s", p)
		}
	}
}
