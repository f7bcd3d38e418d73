// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// northstar-runtime outside Docker: run by hand in front of runc (the
// hostile-image table), and as podman's runtime.

// TestRuntimeWrapperHostileImages: the hostile-image table the hook
// passes under runc, with the hook added by northstar-runtime (`runc run`
// through the wrapper, no hook in the bundle): every image is refused or
// gets its secret inside its own rootfs, the host untouched.
func TestRuntimeWrapperHostileImages(t *testing.T) {
	requires(t, "runc")
	rt, err := runtimeBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "", nil)
	runHostile(t, append(hostileImages, mountTargetImages...), e.secretHex(t),
		func(t *testing.T) *bundle { return newBundle(t, e.dir, false, `cat /run/northstar/secret`) },
		func(t *testing.T, b *bundle) result {
			b.write(t)
			id := fmt.Sprintf("ns-rt-%d-%d", os.Getpid(), containerSeq.Add(1))
			root := filepath.Join(e.dir, "runc-root")
			t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
			cmd := exec.Command(rt, "--root", root, "run", "--bundle", b.dir, id)
			cmd.Env = append(os.Environ(), "NORTHSTAR_CONFIG="+e.config)
			r := run(t, cmd)
			if r.err == nil && !strings.Contains(readFile(t, filepath.Join(b.dir, "config.json")), `"northstar-hook"`) {
				t.Errorf("the container started and its config.json has no northstar hook")
			}
			return r
		})
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// podmanWithWrapper makes p run containers through northstar-runtime
// (`podman --runtime /path/northstar-runtime`) with no hooks.d file, and
// returns a function that runs `podman run` that way. podman hands its
// runtime only conmon's environment: containers.conf's conmon_env_vars
// carries NORTHSTAR_CONFIG there (CONTAINERS_CONF names the file).
func podmanWithWrapper(t *testing.T, p *testPodman, e *env) func(script string, extra ...string) result {
	t.Helper()
	rt, err := runtimeBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(p.hooks, "northstar.json")); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(p.dir, "containers.conf")
	body := fmt.Sprintf("[engine]\nconmon_env_vars = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"NORTHSTAR_CONFIG=%s\"]\n", e.config)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	seq := 0
	return func(script string, extra ...string) result {
		t.Helper()
		seq++
		cidFile := filepath.Join(p.dir, fmt.Sprintf("cid-%d", seq))
		args := []string{"--runtime", rt, "run", "--rm", "--cidfile", cidFile, "--network", "none"}
		if p.a != nil {
			args = append(args, "--ulimit", "host")
		} else {
			args = append(args, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
		}
		args = append(append(args, extra...), "--rootfs", p.rootfs, "/bin/sh", "-c", script)
		cmd := p.cmd(args...)
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, "CONTAINERS_CONF="+conf)
		r := run(t, cmd)
		p.checkNoRuncState(t, cidFile)
		return r
	}
}

// checkNoRuncState fails when runc still holds a state for the --rm
// container whose id podman wrote to cidFile: podman deletes through the
// wrapper with no PATH in its environment, and a wrapper that cannot find
// runc then leaves one state directory per container behind.
func (p *testPodman) checkNoRuncState(t *testing.T, cidFile string) {
	t.Helper()
	id, err := os.ReadFile(cidFile)
	if errors.Is(err, os.ErrNotExist) {
		return // refused before podman made the container
	}
	if err != nil {
		t.Fatal(err)
	}
	root := "/run/runc" // runc's default for root, and podman passes no --root
	if p.a != nil {
		root = filepath.Join(p.dir, "xdg", "runc") // rootless: $XDG_RUNTIME_DIR/runc
	}
	state := filepath.Join(root, strings.TrimSpace(string(id)))
	if _, err := os.Stat(state); err == nil {
		_ = exec.Command("runc", "--root", root, "delete", "--force", filepath.Base(state)).Run()
		t.Errorf("podman --rm through northstar-runtime left runc's state %s behind: the wrapper's delete did not reach runc", state)
	}
}

// checkPodmanWrapper: through podman --runtime northstar-runtime, a
// container reads the store's secret, 0400, owned by its user, on a
// read-only mount; the disable annotation opts one out; a malformed
// annotation stops the container, naming it.
func checkPodmanWrapper(t *testing.T, e *env, run func(script string, extra ...string) result) {
	t.Helper()
	r := run("cat /run/northstar/secret; echo; stat -c '%u:%g %a' /run/northstar/secret; grep ' /run/northstar ' /proc/self/mountinfo", "--user", "1000:1000")
	lines := strings.SplitN(r.stdout, "\n", 3)
	if r.err != nil || len(lines) != 3 || lines[0] != e.secretHex(t) || lines[1] != "1000:1000 400" || !strings.Contains(lines[2], " ro,") {
		t.Fatalf("podman --runtime northstar-runtime: want the store's secret, 0400 owned by the container user, on a read-only mount:\n%s", r)
	}
	r = run("test -e /run/northstar/secret && echo PRESENT || echo ABSENT", "--annotation", "io.northstar.secret.disable=true")
	if r.err != nil || strings.TrimSpace(r.stdout) != "ABSENT" {
		t.Errorf("disable annotation:\n%s", r)
	}
	r = run("echo STARTED", "--annotation", "io.northstar.secret.mode=0644")
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "io.northstar.secret.mode") {
		t.Errorf("container with a writable mode annotation started or did not name it:\n%s", r)
	}
}

// TestPodmanRuntimeWrapper: `podman --runtime northstar-runtime`, rootful.
func TestPodmanRuntimeWrapper(t *testing.T) {
	requires(t, "podman", "runc")
	e := newEnv(t, "", nil)
	p := newTestPodman(t, nil, e)
	checkPodmanWrapper(t, e, podmanWithWrapper(t, p, e))
}

// TestRootlessPodmanRuntimeWrapper: the same, rootless.
func TestRootlessPodmanRuntimeWrapper(t *testing.T) {
	requires(t, "podman", "runc", "newuidmap", "newgidmap")
	a := unprivileged(t)
	e := newEnv(t, "", a)
	p := newTestPodman(t, a, e)
	checkPodmanWrapper(t, e, podmanWithWrapper(t, p, e))
}
