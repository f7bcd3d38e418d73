// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/remedy"
	"github.com/northstar-oci/northstar/seal"
)

// TestAgentHook: northstar-agent-hook, which links no TPM code
// (TestAgentHookLinksNoTPM), serves a start the agent delivers to as
// northstar-hook does: the container's secret is the agent's, and it
// follows a rotation. A start the agent does not serve (stopped) gets its
// secret from `northstar-hook unseal`, and what that fails with reaches
// the runtime as the hook's one line, its remedy included.
func TestAgentHook(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "3s", "")
	a := startAgent(t, e, sock)

	root := filepath.Join(e.dir, "runc-agent-hook")
	d := newBundle(t, e.dir, false, "sleep 600").withHookBinary("createRuntime", e.config, bins.agentHook).runDetached(t, root, "served")
	if got, want := readIn(t, d, "secret"), e.secretHex(t); got != want {
		t.Fatalf("the container served by the agent reads %q, want %s", got, want)
	}
	mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
	waitFollows(t, e.secretHex(t), d)
	if st := e.ctl(t, "status"); !strings.Contains(st.stdout, "follows rotations") {
		t.Errorf("status lists no container following rotations:\n%s", st)
	}

	// The agent stopped: northstar-hook, next to it, unseals.
	if err := a.stop(t); err != nil {
		t.Logf("agent stop: %v", err)
	}
	r := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHookBinary("createRuntime", e.config, bins.agentHook).runcRun(t)
	if want := e.secretHex(t); r.err != nil || r.stdout != want {
		t.Fatalf("with the agent stopped: want the secret %s:\n%s", want, r)
	}

	// Its failure is the hook's one line, with the remedy.
	if err := os.Remove(filepath.Join(e.dir, "state", seal.HostKeyFile)); err != nil {
		t.Fatal(err)
	}
	r = newBundle(t, e.dir, false, "cat /run/northstar/secret").withHookBinary("createRuntime", e.config, bins.agentHook).runcRun(t)
	if r.err == nil || r.stdout != "" {
		t.Fatalf("with the key gone the start went on:\n%s", r)
	}
	t.Logf("with the key gone: %s", strings.TrimSpace(r.stderr))
	if !strings.Contains(r.stderr, "northstar-agent-hook: unseal: ") || !strings.Contains(r.stderr, remedy.Rotate) || strings.Contains(r.stderr, "northstar-hook: ") {
		t.Errorf("want one line of northstar-agent-hook naming the unseal and %q:\n%s", remedy.Rotate, r.stderr)
	}
}
