// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/northstar-oci/northstar/client"
)

// nriEnv is apiEnv with the agent's NRI plugin on, at a socket of the
// test's (never the host's /var/run/nri/nri.sock), and the extra config.
func nriEnv(t *testing.T, extra ...string) (e *env, agentSock, nriSock string) {
	t.Helper()
	agentSock = agentSocket(t, nil)
	nriSock = filepath.Join(filepath.Dir(filepath.Dir(agentSock)), "nri.sock")
	e = newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n[nri]\nenable = true\nsocket = %q\n", agentSock, nriSock)+strings.Join(extra, ""), nil)
	return e, agentSock, nriSock
}

// setupContainerd runs `northstarctl setup containerd` on c's config, as a
// user would after installing, and returns its output.
func setupContainerd(t *testing.T, e *env, c *criContainerd, args ...string) result {
	t.Helper()
	bin := "containerd"
	if c.bin != "" {
		bin = filepath.Join(c.bin, "containerd")
	}
	cmd := exec.Command(bins.ctl, append([]string{"setup", "containerd", "--config", e.config, "--runtime-config", c.configPath(), "--containerd", bin}, args...)...)
	cmd.Env = c.env
	return run(t, cmd)
}

// startNRIContainerd starts a containerd 2.4.2 wired by `northstarctl
// setup containerd` (NRI at e's [nri] socket, the plugin required), pods
// of its default runtime, and waits until agent a's plugin registered.
func startNRIContainerd(t *testing.T, e *env, a *agentProc, name string) *criContainerd {
	t.Helper()
	return startNRIContainerdWith(t, e, a, name, "")
}

// startNRIContainerdWith is startNRIContainerd with extra keys in the
// table of the default runtime (runc).
func startNRIContainerdWith(t *testing.T, e *env, a *agentProc, name, runcExtra string) *criContainerd {
	t.Helper()
	c := newCRIContainerd(t, e, name, containerd2Bin)
	c.handler = ""
	c.writeConfig(t, 3, runcExtra)
	if r := setupContainerd(t, e, c); r.err != nil || !strings.Contains(r.stdout, "required_plugins") {
		t.Fatalf("setup containerd:\n%s", r)
	}
	c.start(t)
	c.importImage(t)
	a.waitLogged(t, "registered with the runtime", 1)
	return c
}

// waitLogged waits until the agent's output holds want n times.
func (a *agentProc) waitLogged(t *testing.T, want string, n int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); strings.Count(a.out.String(), want) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not log %q %d times in 15 s; its output:\n%s", want, n, a.out)
		}
	}
}

// hasNorthstarHook reports whether the OCI spec containerd made for a
// container (crictl inspect) runs the northstar hook.
func (c *criContainerd) hasNorthstarHook(t *testing.T, id string) bool {
	t.Helper()
	var info struct {
		Info struct {
			RuntimeSpec struct {
				Hooks map[string][]struct {
					Path string `json:"path"`
				} `json:"hooks"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(c.mustCrictl(t, "inspect", "-o", "json", id)), &info); err != nil {
		t.Fatal(err)
	}
	for _, stage := range info.Info.RuntimeSpec.Hooks {
		for _, h := range stage {
			if filepath.Base(h.Path) == "northstar-hook" {
				return true
			}
		}
	}
	return false
}

// TestNRIPodsGetTheSecret: Kubernetes without a RuntimeClass. containerd
// 2.4.2 wired by `northstarctl setup containerd` (a drop-in: NRI at the
// test's socket, the plugin in required_plugins), the agent running the
// plugin ([nri] enable, [api] enable), pods of containerd's default
// runtime through crictl (rootful):
//   - a pod's containers share the store's secret, each has its own API
//     socket named <namespace>/<pod>/<container>; the pause container
//     gets nothing, an opted-out container nothing (no hook in its spec);
//   - a containerd restart is the plugin's reconnect and rotates once,
//     before any container of the new containerd gets the hook;
//   - with the plugin gone, pod containers fail to start, naming it.
func TestNRIPodsGetTheSecret(t *testing.T) {
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	e, sock, _ := nriEnv(t)
	a := startAgent(t, e, sock)
	c := startNRIContainerd(t, e, a, "containerd 2.4.2 (NRI)")
	rec0 := e.record(t)
	if pid := lifecyclePid(rec0.LifecycleID); pid != c.cmd.Process.Pid {
		t.Errorf("the secret belongs to lifecycle %q, want containerd's pid %d (the plugin adopts it)", rec0.LifecycleID, c.cmd.Process.Pid)
	}

	p1 := c.runPod(t, "web")
	app := c.runContainer(t, p1, "app")
	side := c.runContainer(t, p1, "sidecar")
	sa, sb := secretOf(t, c.pid(t, "inspect", app)), secretOf(t, c.pid(t, "inspect", side))
	if sa == "" || sa != sb || sa != e.secretHex(t) {
		t.Fatalf("the pod's containers read %q and %q, want the store's %s", sa, sb, e.secretHex(t))
	}
	if s := secretOf(t, c.pid(t, "inspectp", p1.id)); s != "" {
		t.Error("the pod sandbox (pause) container got the secret")
	}
	for id, name := range map[string]string{app: "default/web/app", side: "default/web/sidecar"} {
		got, err := client.New(filepath.Join(registeredDir(t, sock, id), "api.sock")).Identity(context.Background())
		if err != nil || got.Identity != name {
			t.Errorf("the API identity of %s: %+v, %v; want %s", name, got, err, name)
		}
	}
	if dirs := registeredDirs(t, sock, p1.id); len(dirs) != 0 {
		t.Errorf("the pod sandbox was registered with the agent: %v", dirs)
	}
	// Opted out of both, on the container: no hook at all. On the pod
	// (NRI style, for one container of it): the same.
	off := map[string]string{"io.northstar.secret.disable": "true", "io.northstar.api.disable": "true"}
	out := c.mustCrictl(t, c.createArgs(t, p1, "optout", off)...)
	c.mustCrictl(t, "start", out)
	args, p2 := c.podArgs(t, "quiet", map[string]string{"io.northstar.secret.disable/container.log": "true", "io.northstar.api.disable/container.log": "true"})
	p2.id = c.mustCrictl(t, args...)
	quiet := c.runContainer(t, p2, "log")
	loud := c.runContainer(t, p2, "app")
	for _, id := range []string{out, quiet} {
		if s := secretOf(t, c.pid(t, "inspect", id)); s != "" || c.hasNorthstarHook(t, id) {
			t.Errorf("an opted-out container got the secret (%q) or the hook (%v)", s, c.hasNorthstarHook(t, id))
		}
		if dirs := registeredDirs(t, sock, id); len(dirs) != 0 {
			t.Errorf("an opted-out container was registered with the agent: %v", dirs)
		}
	}
	if s := secretOf(t, c.pid(t, "inspect", loud)); s != sa {
		t.Errorf("the other container of the pod that opted one out read %q, want %s", s, sa)
	}

	// A containerd restart: the plugin reconnects and rotates, once.
	c.restart(t)
	a.waitLogged(t, "registered with the runtime", 2)
	rec1 := e.record(t)
	if rec1.Generation != rec0.Generation+1 || lifecyclePid(rec1.LifecycleID) != c.cmd.Process.Pid {
		t.Errorf("after the restart: generation %d of lifecycle %q; want %d of containerd pid %d", rec1.Generation, rec1.LifecycleID, rec0.Generation+1, c.cmd.Process.Pid)
	}
	if n := strings.Count(a.out.String(), "new lifecycle secret generation"); n != 1 {
		t.Errorf("%d rotations logged, want 1:\n%s", n, a.out)
	}
	p3 := c.runPod(t, "web3")
	n := c.runContainer(t, p3, "app")
	if s := secretOf(t, c.pid(t, "inspect", n)); s == "" || s == sa || s != e.secretHex(t) {
		t.Errorf("a pod after the restart read %q; want the new lifecycle's %s", s, e.secretHex(t))
	}
	// The running pod's container follows (live rotation).
	followed(t, c.pid(t, "inspect", app), e.secretHex(t), sa)
	if rec2 := e.record(t); rec2.Generation != rec1.Generation {
		t.Errorf("generation %d after more starts, want %d: rotated again", rec2.Generation, rec1.Generation)
	}

	// The plugin gone (the agent stopped): required_plugins fails the
	// start closed, naming it.
	if err := a.stop(t); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.out)
	}
	p4 := c.runPod(t, "late")
	r := c.crictl(t, c.createArgs(t, p4, "app", nil)...)
	if r.err == nil || !strings.Contains(r.stderr, `required plugin \"northstar\" not present`) {
		t.Errorf("a container created with the plugin away:\n%s\nwant a failure naming the required plugin", r)
	}
}

// TestNRISPIFFE: with [spiffe] on, the NRI plugin tells a Kubernetes
// container where its Workload API is (SPIFFE_ENDPOINT_SOCKET in the spec
// containerd made), and the container's spiffe.sock issues the SVID of
// its CRI identity, three path segments: spiffe://example.org/default/web/app.
func TestNRISPIFFE(t *testing.T) {
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	e, sock, _ := nriEnv(t, "[spiffe]\ntrust_domain = \"example.org\"\n")
	a := startAgent(t, e, sock)
	c := startNRIContainerd(t, e, a, "containerd 2.4.2 (NRI, SPIFFE)")
	p := c.runPod(t, "web")
	app := c.runContainer(t, p, "app")
	var info struct {
		Info struct {
			RuntimeSpec struct {
				Process struct {
					Env []string `json:"env"`
				} `json:"process"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(c.mustCrictl(t, "inspect", "-o", "json", app)), &info); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.Info.RuntimeSpec.Process.Env, "SPIFFE_ENDPOINT_SOCKET=unix:///run/northstar/api/spiffe.sock") {
		t.Errorf("the container's environment: %q", info.Info.RuntimeSpec.Process.Env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+filepath.Join(registeredDir(t, sock, app), "spiffe.sock")))
	if err != nil || svid.ID.String() != "spiffe://example.org/default/web/app" {
		t.Errorf("the pod container's X.509-SVID: %v, %v; want spiffe://example.org/default/web/app", svid, err)
	}
}
