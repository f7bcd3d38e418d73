// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control"
)

// testPodman runs Debian's podman, as the test user (rootless) or as root
// (a nil account), with its storage and runtime dirs private to the test,
// and the hooks.d directory that `northstarctl config hooks-d` filled.
// Flags for this host: runc with cgroupfs (cgroup v1, no systemd user
// session) and no network. Rootless, the user's own rlimits (podman's
// default RLIMIT_NOFILE is above them); rootful, limits below root's hard
// ones, since root here lacks CAP_SYS_RESOURCE and podman's rootful
// defaults (nofile 1048576) are above them.
type testPodman struct {
	a          *account // nil: rootful
	dir, hooks string
	// systemHooks: no --hooks-dir, podman reads the directories it reads
	// for a user (the installed package's hooks.d file).
	systemHooks    bool
	rootfs         string
	storage, runrt string
}

func newTestPodman(t *testing.T, a *account, e *env) *testPodman {
	t.Helper()
	dir := worldDir(t)
	p := &testPodman{a: a, dir: dir, hooks: filepath.Join(dir, "hooks.d"), rootfs: filepath.Join(dir, "rootfs"),
		storage: filepath.Join(dir, "storage"), runrt: filepath.Join(dir, "run")}
	for _, d := range []string{p.hooks, filepath.Join(dir, "xdg")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The hooks.d file exactly as a user makes it: northstarctl's stdout.
	r := mustRun(t, exec.Command(bins.ctl, "config", "hooks-d", "--config", e.config))
	if err := os.WriteFile(filepath.Join(p.hooks, "northstar.json"), []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	mkBusybox(t, p.rootfs)
	if a != nil {
		a.chownR(t, dir)
	}
	t.Cleanup(func() {
		// Storage holds files of subordinate ids: remove them as the user.
		cmd := p.cmd("system", "reset", "--force")
		_ = cmd.Run()
	})
	return p
}

func (p *testPodman) cmd(args ...string) *exec.Cmd {
	all := []string{"--root", p.storage, "--runroot", p.runrt, "--cgroup-manager", "cgroupfs", "--runtime", "runc"}
	if !p.systemHooks {
		all = append(all, "--hooks-dir", p.hooks)
	}
	all = append(all, args...)
	cmd := exec.Command("podman", all...)
	if p.a != nil {
		p.a.apply(cmd)
		cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+filepath.Join(p.dir, "xdg"))
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	return cmd
}

// run starts a container from the busybox rootfs running `sh -c script`.
func (p *testPodman) run(t *testing.T, script string, extra ...string) result {
	t.Helper()
	args := []string{"run", "--rm", "--network", "none"}
	if p.a != nil {
		args = append(args, "--ulimit", "host")
	} else {
		args = append(args, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
	}
	args = append(append(args, extra...), "--rootfs", p.rootfs, "/bin/sh", "-c", script)
	return run(t, p.cmd(args...))
}

// TestRootlessPodmanHooksDir: rootless podman with the hooks.d JSON of
// `northstarctl config hooks-d` delivers the secret to every container,
// read-only and owned by the container's user, the same within a lifecycle
// and new after a rotation; the disable annotation and a failing hook
// behave as with runc.
func TestRootlessPodmanHooksDir(t *testing.T) {
	requires(t, "podman", "runc", "newuidmap", "newgidmap")
	a := unprivileged(t)
	e := newEnv(t, "", a)
	p := newTestPodman(t, a, e)

	read := func() string {
		t.Helper()
		r := p.run(t, "cat /run/northstar/secret")
		if r.err != nil || !isSecretHex(r.stdout) {
			t.Fatalf("podman container did not read a secret:\n%s", r)
		}
		return r.stdout
	}
	first := read()
	if want := e.secretHex(t); first != want {
		t.Fatalf("container read %s, the store holds %s", first, want)
	}
	if again := read(); again != first {
		t.Errorf("second container read another secret")
	}

	r := p.run(t, "stat -c '%u:%g %a' /run/northstar/secret; grep ' /run/northstar ' /proc/self/mountinfo; echo x > /run/northstar/secret && echo WROTE; true", "--user", "1000:1000")
	if r.err != nil {
		t.Fatalf("podman container:\n%s", r)
	}
	if !strings.HasPrefix(r.stdout, "1000:1000 400\n") || !strings.Contains(r.stdout, " ro,") || strings.Contains(r.stdout, "WROTE") {
		t.Errorf("secret file not 0400 owned by the container user on a read-only mount:\n%s", r)
	}

	r = p.run(t, "test -e /run/northstar/secret && echo PRESENT || echo ABSENT", "--annotation", "io.northstar.secret.disable=true")
	if r.err != nil || strings.TrimSpace(r.stdout) != "ABSENT" {
		t.Errorf("disable annotation:\n%s", r)
	}

	if rr := e.ctl(t, "rotate"); rr.err != nil {
		t.Fatalf("rotate:\n%s", rr)
	}
	a.chownR(t, e.dir)
	if second := read(); second == first || second != e.secretHex(t) {
		t.Errorf("after rotate the container read the old secret or not the store's")
	}

	// Fail closed: a malformed annotation stops the container.
	r = p.run(t, "echo STARTED", "--annotation", "io.northstar.secret.mode=0644")
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "io.northstar.secret.mode") {
		t.Errorf("container with a writable mode annotation started or did not name it:\n%s", r)
	}
}

// TestRootlessPodmanAPI: rootless podman with [api] enable. The hook runs
// at createRuntime in podman's user and mount namespaces, so the agent
// runs there too (`podman unshare northstarctl agent`), the way it runs in
// rootlesskit's for rootless containerd.
func TestRootlessPodmanAPI(t *testing.T) {
	requires(t, "podman", "runc", "newuidmap", "newgidmap")
	a := unprivileged(t)
	sock := agentSocket(t, a)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", sock), a)
	p := newTestPodman(t, a, e)
	checkPodmanAPI(t, p, e, sock, startPodmanAgent(t, p, e, sock))
}

// TestRootfulPodman: podman as root with the hooks.d file delivers the
// lifecycle secret, and with [api] enable (the agent on the host, as
// root) each container's own API socket.
func TestRootfulPodman(t *testing.T) {
	requires(t, "podman", "runc")
	sock := agentSocket(t, nil)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", sock), nil)
	p := newTestPodman(t, nil, e)
	ag := startAgent(t, e, sock)

	r := p.run(t, "cat /run/northstar/secret; echo; stat -c '%u:%g %a' /run/northstar/secret; grep ' /run/northstar ' /proc/self/mountinfo", "--user", "1000:1000")
	if r.err != nil {
		t.Fatalf("rootful podman container:\n%s", r)
	}
	lines := strings.SplitN(r.stdout, "\n", 3)
	if len(lines) != 3 || lines[0] != e.secretHex(t) || lines[1] != "1000:1000 400" || !strings.Contains(lines[2], " ro,") {
		t.Errorf("want the store's secret, 0400 owned by the container user, on a read-only mount:\n%s", r)
	}
	checkPodmanAPI(t, p, e, sock, func() {
		if err := ag.stop(t); err != nil {
			t.Logf("agent exit: %v", err)
		}
	})
}

// checkPodmanAPI: through p, containers speak as their identity on their
// own read-only socket, a token verifies for its audience only, sockets go
// with their containers, and once stop has stopped the agent a start
// fails naming it.
func checkPodmanAPI(t *testing.T, p *testPodman, e *env, sock string, stop func()) {
	t.Helper()
	b := &bundle{rootfs: p.rootfs}
	b.withNsapi(t, "")
	if p.a != nil {
		p.a.chownR(t, p.rootfs)
	}
	as := func(identity, script string) result {
		t.Helper()
		return p.run(t, script, "--annotation", "io.northstar.identity="+identity)
	}
	checkOwnSocket(t, as)
	checkTokens(t, as)
	// Every container was removed (--rm): so are their sockets.
	containers := control.ContainersDir(sock)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ents, err := os.ReadDir(containers)
		if err != nil {
			t.Fatalf("the agent's containers directory: %v", err)
		}
		left := 0
		for _, d := range ents {
			if d.IsDir() {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d container directories left after the containers were removed", left)
			break
		}
	}

	stop()
	r := as("client", "echo STARTED")
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "start 'northstarctl agent'") {
		t.Errorf("container started with the agent down, or the error does not name the agent:\n%s", r)
	}
}

// startPodmanAgent runs the agent in rootless podman's namespaces and
// returns a function that stops it (also run at cleanup).
func startPodmanAgent(t *testing.T, p *testPodman, e *env, sock string) (stop func()) {
	t.Helper()
	cmd := p.cmd("unshare", bins.ctl, "agent", "--config", e.config)
	cmd.SysProcAttr.Setpgid = true
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	waitSocket(t, sock, 15*time.Second, func() string { return "the agent did not start in podman's namespaces:\n" + out.String() })
	return stop
}
