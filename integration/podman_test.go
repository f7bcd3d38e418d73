//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// rootlessPodman runs Debian's podman as the test user, with its storage
// and runtime dirs private to the test, and the hooks.d directory that
// `northstarctl config hooks-d` filled. Flags for this host: runc with
// cgroupfs (cgroup v1, no systemd user session), no network, and the
// user's own rlimits (podman's default RLIMIT_NOFILE is above them).
type rootlessPodman struct {
	a              *account
	dir, hooks     string
	rootfs         string
	storage, runrt string
}

func newRootlessPodman(t *testing.T, a *account, e *env) *rootlessPodman {
	t.Helper()
	dir := worldDir(t)
	p := &rootlessPodman{a: a, dir: dir, hooks: filepath.Join(dir, "hooks.d"), rootfs: filepath.Join(dir, "rootfs"),
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
	a.chownR(t, dir)
	t.Cleanup(func() {
		// Storage holds files of subordinate ids: remove them as the user.
		cmd := p.cmd("system", "reset", "--force")
		_ = cmd.Run()
	})
	return p
}

func (p *rootlessPodman) cmd(args ...string) *exec.Cmd {
	all := append([]string{"--root", p.storage, "--runroot", p.runrt, "--cgroup-manager", "cgroupfs",
		"--runtime", "runc", "--hooks-dir", p.hooks}, args...)
	cmd := exec.Command("podman", all...)
	p.a.apply(cmd)
	cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+filepath.Join(p.dir, "xdg"))
	return cmd
}

// run starts a container from the busybox rootfs running `sh -c script`.
func (p *rootlessPodman) run(t *testing.T, script string, extra ...string) result {
	t.Helper()
	args := append([]string{"run", "--rm", "--network", "none", "--ulimit", "host"}, extra...)
	args = append(args, "--rootfs", p.rootfs, "/bin/sh", "-c", script)
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
	p := newRootlessPodman(t, a, e)

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
