// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Docker with no hook: where the agent serves, northstar-runtime has it
// prepare the container and adds its bind mounts to config.json, as the
// shim does (package agentmounts): Docker's containerd runs runc through
// the runc shim, which has runc write the init pid to the bundle, where
// the agent binds the registration.

// dockerBundleSpec is what the config.json runc read for Docker container
// id holds of northstar: its hooks, and every mount by destination.
func dockerBundleSpec(t *testing.T, d *testDockerd, id string) (hooks []string, mounts map[string]string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.dir, "exec", "containerd", "daemon", "io.containerd.runtime.v2.task", "moby", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Hooks  map[string][]struct{ Path string }
		Mounts []struct {
			Destination, Type, Source string
			Options                   []string
		}
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	for _, hs := range s.Hooks {
		for _, h := range hs {
			// Docker's own (libnetwork's prestart hook) aside.
			if strings.Contains(filepath.Base(h.Path), "northstar") {
				hooks = append(hooks, h.Path)
			}
		}
	}
	mounts = map[string]string{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m.Type + " " + m.Source + " " + strings.Join(m.Options, ",")
	}
	return hooks, mounts
}

// TestDockerNoHook: a Docker container the agent serves starts with no
// hook in its config.json, the agent's two read-only bind mounts instead,
// and is registered with the agent (its API answers as itself).
func TestDockerNoHook(t *testing.T) {
	requiresDocker(t)
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	d := newDockerd(t, e, "")
	r := run(t, d.docker("run", "-d", "--network", "none", "--runtime", "northstar", dockerImage, "sleep", "600"))
	if r.err != nil {
		t.Fatalf("docker run -d:\n%s", r)
	}
	id := strings.TrimSpace(r.stdout)
	defer run(t, d.docker("rm", "-f", id))
	hooks, mounts := dockerBundleSpec(t, d, id)
	if len(hooks) != 0 {
		t.Errorf("northstar hooks in the bundle of a container the agent serves: %v", hooks)
	}
	for _, dst := range []string{"/run/northstar", "/run/northstar/api"} {
		if m := mounts[dst]; !strings.HasPrefix(m, "bind ") || !strings.Contains(m, "ro,nosuid,nodev,noexec") {
			t.Errorf("mount at %s: %q, want the agent's read-only bind mount", dst, m)
		}
	}
	if r := run(t, d.docker("exec", id, "cat", "/run/northstar/secret")); r.err != nil || r.stdout != e.secretHex(t) {
		t.Errorf("docker exec cat /run/northstar/secret:\n%s", r)
	}
	if r := run(t, d.docker("exec", id, "nsapi", "identity")); r.err != nil || !strings.HasPrefix(id, strings.TrimSpace(r.stdout)[:12]) {
		t.Errorf("the container's API, as itself (%s):\n%s", id, r)
	}
}

// TestDockerHostileImagesNoHook runs the hook's attack table
// (hostile_test.go) through Docker with the agent's mounts: Docker mounts
// no tmpfs at /run, so every image the hook refuses must not start here
// either (runc refuses the mount, or the agent's check after `runc
// create` kills the container), and the others read their secret; the
// host directory stays as it was, but for the empty directory runc may
// make in a writable volume an image symlinks to (as with NRI).
func TestDockerHostileImagesNoHook(t *testing.T) {
	requiresDocker(t)
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)
	d := newDockerd(t, e, "")
	want := e.secretHex(t)
	for i, tt := range append(hostileImages, mountTargetImages...) {
		t.Run(tt.name, func(t *testing.T) {
			site := newHostileSite(t, tt, "")
			image := fmt.Sprintf("northstar-hostile-%d", i)
			mustRun(t, exec.Command("sh", "-c", `tar -C "$1" -c . | "$2" -H "unix://$3" import - "$4"`, "sh", site.rootfs, dockerCLI, d.sock, image))
			args := []string{"run", "--rm", "--network", "none", "--runtime", "northstar"}
			if tt.volume {
				args = append(args, "-v", site.host+":/vol")
			}
			if tt.runTmpfs {
				args = append(args, "--tmpfs", "/run")
			}
			logged := len(a.out.String())
			r := run(t, d.docker(append(args, image, "sh", "-c", "sleep 2; cat /run/northstar/secret")...))
			said := a.out.String()[logged:]
			refuse := tt.refuse || replaces(tt.image, "symlink", "run", "run/northstar")
			switch {
			case refuse && r.err == nil:
				t.Errorf("container ran, want it refused:\n%s", r)
			case refuse && !strings.Contains(said, "killing its process") && !strings.Contains(r.stderr, "OCI runtime create failed"):
				t.Errorf("the refusal is neither the agent's nor the runtime's:\n%s\nthe agent said:\n%s", r, said)
			case !refuse && (r.err != nil || !strings.Contains(r.stdout, want)):
				t.Errorf("container did not read its secret:\n%s", r)
			}
			if refuse {
				t.Logf("refused: %s%s", refusal(r.stderr), strings.TrimSpace(said))
			}
			site.untouched(t, tt.volume)
		})
	}
}
