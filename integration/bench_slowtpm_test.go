// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"testing"
	"time"
)

// The rows of DESIGN.md §7 for a TPM as slow as a discrete one: swtpm
// answers a command in about 1 ms, a discrete TPM in 20-200 ms, so these
// rows put a proxy in front of swtpm that holds every response for
// discreteTPMDelay (the fast end of that range). An unseal is five
// commands (Load, StartAuthSession, PolicyPCR, Unseal, FlushContext of
// the object; the blob carries the SRK's public area, and the Unseal ends
// the policy session): about 150 ms per start on such a TPM.

// discreteTPMDelay is what the proxy adds to each TPM command.
const discreteTPMDelay = 30 * time.Millisecond

// TestBenchDiscreteTPM: `runc run` with the hook unsealing from the slow
// TPM at every start (no agent) / bare. Reported: no target, this is the
// cost the agent exists to avoid.
func TestBenchDiscreteTPM(t *testing.T) {
	requires(t, "runc", "swtpm")
	e := newTPMEnv(t, newTPMProxy(t, newSWTPM(t, nil), discreteTPMDelay), "[]", nil)
	reportRatioOnly("`runc run` with the hook, TPM unseal per start, each TPM command delayed 30 ms (a discrete TPM) / without", benchHookOverhead(t, e))
}

// TestBenchDiscreteTPMAgent: the same TPM behind the agent, as the shipped
// config runs it: the agent unseals once, the hooks take the secret from
// it. Target 1.05, as with swtpm.
func TestBenchDiscreteTPMAgent(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newTPMProxy(t, newSWTPM(t, nil), discreteTPMDelay)
	e, sock := newAgentTPMEnv(t, tpm)
	startAgent(t, e, sock)
	served := tpm.servedByAgent()
	p := benchHookOverhead(t, e)
	reportRatio("`runc run` with the hook served by the agent, each TPM command delayed 30 ms (a discrete TPM) / without", p, 1.05, served())
}

// TestBenchDiscreteTPMConcurrent: 32 containers started at once on the
// slow TPM, unsealing per start (they take turns at the TPM: reported) and
// through the agent (target: all 32 start and read the one secret).
func TestBenchDiscreteTPMConcurrent(t *testing.T) {
	requires(t, "runc", "swtpm")
	t.Run("per start", func(t *testing.T) {
		e := newTPMEnv(t, newTPMProxy(t, newSWTPM(t, nil), discreteTPMDelay), "[]", nil)
		reportOnly("32 containers started at once, TPM unseal per start, each TPM command delayed 30 ms (a discrete TPM)", startAtOnce(t, e, e.secretHex(t)).String())
	})
	t.Run("agent", func(t *testing.T) {
		tpm := newTPMProxy(t, newSWTPM(t, nil), discreteTPMDelay)
		e, sock := newAgentTPMEnv(t, tpm)
		startAgent(t, e, sock)
		want := e.secretHex(t)
		served := tpm.servedByAgent()
		c := startAtOnce(t, e, want)
		report("32 containers started at once through the agent, each TPM command delayed 30 ms (a discrete TPM)", c.String()+served(), "32/32, one secret", c.ok())
	})
}
