// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestBenchSPIRE: what SPIRE as the issuer costs a container that wants
// its identity at once (DESIGN.md §16): a container started (runc, the
// hook registering it) whose process fetches its first X.509-SVID with
// go-spiffe's X509Source and exits, with [spiffe] issuer = "spire" (the
// SVID from the SPIRE agent's stream the registration opened) against
// "local" (the agent's CA signs a new one), interleaved on one host of the
// SPIRE fleet. Reported: SPIRE is a choice of trust, not of speed.
func TestBenchSPIRE(t *testing.T) {
	f := newSPIREFleet(t)
	f.entry(t, "a", "client", "northstar:identity:client")
	f.startHosts(t)
	h := f.hosts["a"]
	// The same stack but the issuer: a swtpm and the agent of its own.
	sock := agentSocket(t, nil)
	local := newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n[api]\nenable = true\n[spiffe]\ntrust_domain = %q\n",
		newSWTPM(t, nil).path(), sock, spireTD), nil)
	startAgent(t, local, sock)
	fetch := func(e *env) func() error {
		return func() error {
			r := spiffeBundle(t, e, "client", "nsspiffe x509").runcRun(t)
			if r.err != nil || !strings.HasPrefix(r.stdout, "spiffe://"+spireTD+"/client ") {
				return fmt.Errorf("first SVID:\n%s", r)
			}
			return nil
		}
	}
	reportRatioOnly(`container start + first FetchX509SVID: issuer = "spire" / "local"`, interleave(t, 41, fetch(local), fetch(h.e)))
}
