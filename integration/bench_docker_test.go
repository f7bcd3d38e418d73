// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"fmt"
	"testing"
)

// TestBenchDockerRun: `docker run --rm` of a busybox container through
// northstar-runtime / through runc, one dockerd (Debian's 20.10), the
// shipped config (TPM sealer on a swtpm, the agent serving the secret),
// interleaved. What is timed is the whole `docker run` as a user sees it:
// the CLI, dockerd, containerd, the runc shim, the wrapper's exec and the
// hook, the container, its removal.
func TestBenchDockerRun(t *testing.T) {
	requiresDocker(t)
	tpm := newTPMProxy(t, newSWTPM(t, nil), 0)
	e, sock := newAgentTPMEnv(t, tpm)
	startAgent(t, e, sock)
	d := newDockerd(t, e, "")
	start := func(runtime string) func() error {
		return func() error {
			if r := d.run(t, "true", "--runtime", runtime); r.err != nil {
				return fmt.Errorf("%s", r)
			}
			return nil
		}
	}
	if r := d.run(t, "cat /run/northstar/secret", "--runtime", "northstar"); r.err != nil || r.stdout != e.secretHex(t) {
		t.Fatalf("the northstar side does not deliver:\n%s", r)
	}
	served := tpm.servedByAgent()
	p := interleave(t, benchPairs, start("runc"), start("northstar"))
	reportRatio("`docker run` through northstar-runtime (served by the agent, TPM sealer, swtpm) / through runc, Docker 20.10", p, 1.10, served())
}
