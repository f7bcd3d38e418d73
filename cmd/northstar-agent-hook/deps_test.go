// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentHookLinksNoTPM: the hook for hosts where the agent delivers
// exists to start faster than northstar-hook, by not linking the TPM's
// code (go-tpm and the crypto it pulls: their package initialisation and
// page faults cost every process start); and like northstar-hook it links
// only the agent's protocol.
func TestAgentHookLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if !deps[module+"hook"] {
		t.Fatalf("go list -deps lists no hook: %s", out)
	}
	for _, p := range []string{
		"github.com/google/go-tpm/tpm2", "github.com/google/go-tpm/legacy/tpm2", "crypto/rsa", "crypto/ecdsa", "crypto/x509",
		module + "seal/tpmseal", module + "seal/tpmconn", module + "configured", module + "hook/unseal",
		"net/http", module + "agent", module + "agent/registry", module + "agent/api", module + "client", module + "nri",
	} {
		if deps[p] {
			t.Errorf("northstar-agent-hook links %s", p)
		}
	}
}
