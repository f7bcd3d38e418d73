// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/client"
)

// TestNRIIdentityConfinedToTheNamespace: an explicit io.northstar.identity
// on a Kubernetes container, through containerd 2.4.2's CRI (its runc
// runtime's container_annotations lets io.northstar.* into the spec) and
// the agent's NRI plugin, which reads the annotation NRI hands it and
// names the container itself (no hook runs: DESIGN.md §19), is honoured
// only inside the pod's namespace (DESIGN.md §15):
//   - in namespace default, "default/mine" is the container's identity;
//   - "kube-system/x" fails the container, naming the rule and the key
//     that lifts it, and nothing is registered under that identity;
//   - with [api] identity_any_namespace = true it is the container's.
func TestNRIIdentityConfinedToTheNamespace(t *testing.T) {
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	e, sock, _ := nriEnv(t)
	a := startAgent(t, e, sock)
	c := startNRIContainerdWith(t, e, a, "containerd 2.4.2 (NRI, explicit identities)", `  container_annotations = ["io.northstar.*"]`)
	p := c.runPod(t, "web")
	named := func(name, id string) map[string]string { return map[string]string{"io.northstar.identity": id} }

	mine := c.mustCrictl(t, c.createArgs(t, p, "mine", named("mine", "default/mine"))...)
	c.mustCrictl(t, "start", mine)
	if c.hasNorthstarHook(t, mine) {
		t.Fatal("the container's spec runs the northstar hook; want the NRI plugin's mounts (the path under test)")
	}
	identityIs(t, sock, mine, "default/mine")

	// createAndStart creates and starts a container named as thief; the
	// plugin refuses at creation, the agent could at the start.
	createAndStart := func(name string) (string, result) {
		r := c.crictl(t, c.createArgs(t, p, name, named(name, "kube-system/x"))...)
		if r.err != nil {
			return "", r
		}
		id := strings.TrimSpace(r.stdout)
		return id, c.crictl(t, "start", id)
	}
	id, r := createAndStart("thief")
	const want = `annotation io.northstar.identity="kube-system/x" is outside the pod's namespace "default": name it default/..., or set [api] identity_any_namespace = true`
	if r.err == nil {
		t.Fatalf("a container of namespace default named kube-system/x started:\n%s", r)
	}
	// crictl quotes containerd's error, and the quotes in it.
	if !strings.Contains(strings.ReplaceAll(r.stderr, `\"`, `"`), "northstar: container thief: "+want) {
		t.Errorf("the refusal does not name the rule, want %q:\n%s", want, r)
	}
	if id != "" {
		c.crictl(t, "rm", "-f", id)
	}
	saved, err := registry.ReadSaved(sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range saved.Containers {
		if x.Identity == "kube-system/x" {
			t.Errorf("the agent registered %s as kube-system/x", x.ID)
		}
	}

	// Where identities are cluster-wide by design.
	if err := a.stop(t); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.out)
	}
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	lifted := strings.Replace(string(cfg), "[api]\nenable = true\n", "[api]\nenable = true\nidentity_any_namespace = true\n", 1)
	if lifted == string(cfg) {
		t.Fatalf("no [api] table to add identity_any_namespace to in:\n%s", cfg)
	}
	if err := os.WriteFile(e.config, []byte(lifted), 0o600); err != nil {
		t.Fatal(err)
	}
	a = startAgent(t, e, sock)
	a.waitLogged(t, "registered with the runtime", 1)
	id, r = createAndStart("cluster-wide")
	if r.err != nil {
		t.Fatalf("with identity_any_namespace = true, the container named kube-system/x did not start:\n%s", r)
	}
	identityIs(t, sock, id, "kube-system/x")
}

// identityIs checks the identity the agent's API gives container id.
func identityIs(t *testing.T, sock, id, want string) {
	t.Helper()
	got, err := client.New(filepath.Join(registeredDir(t, sock, id), "api.sock")).Identity(context.Background())
	if err != nil || got.Identity != want {
		t.Errorf("the API identity of %s: %+v, %v; want %s", id, got, err, want)
	}
}
