// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"fmt"
	"testing"

	"github.com/northstar-oci/northstar/internal/benchstat"
)

// The rows of DESIGN.md §17 for measured containers: what logging each
// delivery costs a start. Both sides are the hook served by the agent with
// live delivery, on the same TPM; with [measure] enable the agent appends
// the delivery to its log (one write(2)) and extends the batch into the
// NV index in the background, so a start never waits for the TPM.
// Target: 1.02.

// benchMeasure runs pairs of `runc run` with an agent measuring and one
// that does not, both on tpm.
func benchMeasure(t *testing.T, tpm tpmDevice) pairs {
	t.Helper()
	off, sockOff := newAgentTPMEnv(t, tpm)
	startAgent(t, off, sockOff)
	on, sockOn := newAgentTPMEnv(t, tpm, "[measure]\nenable = true\n")
	startAgent(t, on, sockOn)
	bundleOf := func(e *env) func() error {
		b := newBundle(t, e.dir, false, "true").withHook("createRuntime", e.config)
		b.write(t)
		return func() error {
			if r := b.runcRun(t); r.err != nil {
				return fmt.Errorf("%s", r)
			}
			return nil
		}
	}
	// Three times the pairs of the other rows, as the live-delivery row:
	// the difference sought is a fraction of a millisecond.
	return interleave(t, max(benchPairs, 3*benchstat.MinPairs), bundleOf(off), bundleOf(on))
}

// TestBenchMeasuredStart: on swtpm.
func TestBenchMeasuredStart(t *testing.T) {
	requires(t, "runc", "swtpm")
	reportRatio("`runc run` with the hook and the agent, measured ([measure] enable: logged, extended into the TPM in batches) / not measured",
		benchMeasure(t, newSWTPM(t, nil)), 1.02)
}

// TestBenchMeasuredStartSlowTPM: behind the proxy that delays every TPM
// command 30 ms (a discrete TPM): the extends take longer, the starts
// must not notice.
func TestBenchMeasuredStartSlowTPM(t *testing.T) {
	requires(t, "runc", "swtpm")
	reportRatio("`runc run` with the hook and the agent, measured / not measured, each TPM command delayed 30 ms (a discrete TPM)",
		benchMeasure(t, newTPMProxy(t, newSWTPM(t, nil), discreteTPMDelay)), 1.02)
}
