// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import "testing"

// The rows of DESIGN.md §17 for measured containers: what logging each
// delivery costs a start. Both sides are the hook served by the agent with
// live delivery, on the same TPM; with [measure] enable the agent appends
// the delivery to its log (one write(2)) and extends the batch into the
// NV index in the background, so a start never waits for the TPM.
// Target: 1.02.

// TestBenchMeasuredStart: on swtpm.
func TestBenchMeasuredStart(t *testing.T) {
	requires(t, "runc", "swtpm")
	reportRatio("`runc run` with the hook and the agent, measured ([measure] enable: logged, extended into the TPM in batches) / not measured",
		agentStartPairs(t, newSWTPM(t, nil), "", "[measure]\nenable = true\n"), 1.02)
}

// TestBenchMeasuredStartSlowTPM: behind the proxy that delays every TPM
// command 30 ms (a discrete TPM): the extends take longer, the starts
// must not notice.
func TestBenchMeasuredStartSlowTPM(t *testing.T) {
	requires(t, "runc", "swtpm")
	reportRatio("`runc run` with the hook and the agent, measured / not measured, each TPM command delayed 30 ms (a discrete TPM)",
		agentStartPairs(t, newTPMProxy(t, newSWTPM(t, nil), discreteTPMDelay), "", "[measure]\nenable = true\n"), 1.02)
}
