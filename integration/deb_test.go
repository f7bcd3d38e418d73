// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/config"
)

// The package's paths, as a user's system has them.
const (
	debConfig = "/etc/northstar/config.toml"
	debState  = "/var/lib/northstar"
	debUnit   = "/lib/systemd/system/northstar-agent.service"
	debCtl    = "/usr/bin/northstarctl"
)

// debLock serializes every run of TestDebPackage on the machine (other
// worktrees, other clones): the package installs into the real system.
const debLock = "/run/lock/northstar-deb-test.lock"

// lockDeb takes debLock for the test, waiting up to 10 minutes, and
// fails the test if the machine has northstar installed or its paths in
// use: installing over them would clobber someone's installation.
func lockDeb(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(debLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	for deadline := time.Now().Add(10 * time.Minute); syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("%s held for 10 minutes by another package test", debLock)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", "northstar").Output(); err == nil && len(out) > 0 && string(out) != "not-installed" {
		t.Fatalf("the package northstar is %s on this machine: this test installs and purges it; remove it first (dpkg --purge northstar)", out)
	}
	for _, p := range []string{"/etc/northstar", debState, debCtl} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists: this test installs the package into the system and would clobber it; run it on a machine without northstar installed", p)
		}
	}
}

// TestDebPackage: the two commands of a user. `make deb` builds the
// package, lintian finds no error or warning in it, `dpkg -i` installs
// it; `northstarctl setup containerd` wires a containerd 2.4.2 started
// from a private config (its NRI at the test's socket) and initialises
// the state (on a swtpm); the agent, started from the installed unit's
// own ExecStart, runs the NRI plugin, and a pod's container reads the
// secret. `dpkg -r` leaves the conffile and the state directory and no
// other file; `dpkg --purge` leaves nothing.
func TestDebPackage(t *testing.T) {
	requires(t, "dpkg", "dpkg-deb", "dpkg-query", "lintian", "make", "swtpm", "runc")
	nfpm := filepath.Join(toolsDir(), "nfpm-v2.45.2", "nfpm")
	requiresFile(t, nfpm, "scripts/install-tools.sh builds it")
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	lockDeb(t)

	out := t.TempDir()
	build := exec.Command("make", "-s", "-C", "..", "deb", "DEB_OUT="+out)
	build.Env = append(os.Environ(), "TOOLS_DIR="+toolsDir())
	// Both take minutes when the machine is loaded (lintian took over a
	// minute at load 18).
	r := runWithin(t, 10*time.Minute, build)
	if r.err != nil {
		t.Fatalf("make deb:\n%s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	deb := lines[len(lines)-1]
	if !strings.HasPrefix(filepath.Base(deb), "northstar_") || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("make deb made %q", deb)
	}
	if r := runWithin(t, 10*time.Minute, exec.Command("lintian", "--fail-on", "error,warning", deb)); r.err != nil {
		t.Fatalf("lintian:\n%s", r)
	}

	t.Cleanup(func() { exec.Command("dpkg", "--purge", "northstar").Run() })
	mustRun(t, exec.Command("dpkg", "-i", deb))
	files := packageFiles(t)
	// Enabled for the next boot (deb-systemd-helper), started by nothing.
	const wants = "/etc/systemd/system/multi-user.target.wants/northstar-agent.service"
	if target, err := os.Readlink(wants); err != nil || target != debUnit {
		t.Errorf("after install %s -> %q (%v), want the unit enabled", wants, target, err)
	}
	if conf := mustRun(t, exec.Command("dpkg-query", "-W", "-f=${Conffiles}", "northstar")).stdout; !strings.Contains(conf, debConfig) {
		t.Errorf("conffiles %q, want %s", conf, debConfig)
	}
	// The package's hooks.d file is what the installed northstarctl prints.
	hooks, err := os.ReadFile("/usr/share/containers/oci/hooks.d/northstar.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRun(t, exec.Command(debCtl, "config", "hooks-d", "--host-wide")).stdout; got != string(hooks) {
		t.Errorf("the package's hooks.d file:\n%s\nnorthstarctl config hooks-d:\n%s", hooks, got)
	}

	// The user points the installed config at this machine's TPM (a
	// swtpm here); the test keeps the agent and NRI sockets its own.
	tpm := newSWTPM(t, nil)
	agentSock := agentSocket(t, nil)
	nriSock := filepath.Join(filepath.Dir(filepath.Dir(agentSock)), "nri.sock")
	installed, err := os.ReadFile(debConfig)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.NewReplacer(`"/dev/tpmrm0"`, fmt.Sprintf("%q", tpm.path()),
		`"/run/northstar-agent/agent.sock"`, fmt.Sprintf("%q", agentSock),
		`"/var/run/nri/nri.sock"`, fmt.Sprintf("%q", nriSock)).Replace(string(installed))
	if edited == string(installed) || strings.Count(edited, agentSock)+strings.Count(edited, nriSock)+strings.Count(edited, tpm.path()) != 3 {
		t.Fatalf("the installed config no longer has the keys this test sets:\n%s", installed)
	}
	if err := os.WriteFile(debConfig, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(debConfig)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: t.TempDir(), config: debConfig, cfg: cfg}

	c := newCRIContainerd(t, e, "containerd 2.4.2 (the package)", containerd2Bin)
	c.handler = ""
	c.env[0] = "PATH=" + containerd2Bin + ":/usr/sbin:/usr/bin:/sbin:/bin"
	c.writeConfig(t, 3, "")
	// The README's order: setup, then start the agent, then restart
	// containerd. Setup exits 0 and names those two steps; its doctor
	// reports the containerd it wired (2.4.2), not Debian's 1.6 on PATH.
	// A config with [api] enable makes the agent's absence a failure for
	// doctor alone.
	if err := os.WriteFile(debConfig, []byte(strings.Replace(edited, "[api]\nenable = false", "[api]\nenable = true", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	setup := exec.Command(debCtl, "setup", "containerd", "--runtime-config", c.configPath(), "--containerd", filepath.Join(containerd2Bin, "containerd"))
	setup.Env = c.env
	r = run(t, setup)
	if r.err != nil || !strings.Contains(r.stdout, "initialized "+debState) {
		t.Fatalf("setup containerd after installing, before the agent (README order), failed:\n%s", r)
	}
	for _, want := range []string{
		"next  agent at " + agentSock,
		"ok    " + filepath.Join(containerd2Bin, "containerd") + ": containerd github.com/containerd/containerd/v2 2.4.2",
		"next steps (setup starts and restarts nothing):\n  1. start the agent: systemctl start northstar-agent",
		"  2. restart containerd to load its new config",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("setup's output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "containerd github.com/containerd/containerd 1.") {
		t.Errorf("setup's doctor reported the containerd on PATH:\n%s", r.stdout)
	}
	if err := os.WriteFile(debConfig, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	// Docker: the package's runtime wrapper, in the daemon.json setup writes.
	daemon := filepath.Join(t.TempDir(), "daemon.json")
	if r := run(t, exec.Command(debCtl, "setup", "docker", "--daemon-json", daemon)); r.err != nil {
		t.Errorf("setup docker after installing:\n%s", r)
	} else if b, _ := os.ReadFile(daemon); !strings.Contains(string(b), `"path": "/usr/bin/northstar-runtime"`) {
		t.Errorf("setup docker wrote:\n%s", b)
	}

	raw, err := os.ReadFile(debUnit)
	if err != nil {
		t.Fatal(err)
	}
	var argv []string
	for _, kv := range unitService(t, string(raw)) {
		if kv[0] == "ExecStart" {
			argv = strings.Fields(kv[1])
		}
	}
	if len(argv) < 2 || argv[0] != debCtl {
		t.Fatalf("the installed unit's ExecStart %q does not run %s", argv, debCtl)
	}
	a := startAgentCmd(t, exec.Command(argv[0], argv[1:]...), agentSock)
	c.start(t)
	c.importImage(t)
	a.waitLogged(t, "registered with the runtime", 1)
	p := c.runPod(t, "web")
	id := c.runContainer(t, p, "app")
	if got, want := secretOf(t, c.pid(t, "inspect", id)), e.secretHex(t); got == "" || got != want {
		t.Fatalf("the pod's container read %q, the installed store holds %s", got, want)
	}

	// Rootless podman on a host with the package installed: podman reads
	// the package's hooks.d file for the user too; a user with no config
	// of their own, who cannot read the host's state, gets a container
	// that starts untouched (no secret), not one that fails.
	requires(t, "podman", "newuidmap", "newgidmap")
	user := unprivileged(t)
	rootless := newTestPodman(t, user, e)
	rootless.systemHooks = true
	if r := rootless.run(t, "test -e /run/northstar/secret && echo SECRET || echo NONE"); r.err != nil || strings.TrimSpace(r.stdout) != "NONE" {
		t.Errorf("rootless podman with the package installed and no config of its own:\n%s\nwant a container that starts, without a secret", r)
	}

	// setup podman finds the package's file where podman reads hooks
	// (Debian's 4.3: /usr/share/containers/oci/hooks.d only, it asks
	// podman), writes nothing, and a rootful container reads the secret.
	if r := run(t, exec.Command(debCtl, "setup", "podman")); r.err != nil || !strings.Contains(r.stdout, "podman: wired already, nothing changed") {
		t.Errorf("setup podman:\n%s", r)
	}
	if _, err := os.Stat("/etc/containers/oci/hooks.d/northstar.json"); err == nil {
		t.Error("setup podman wrote /etc/containers/oci/hooks.d, which this podman does not read")
	}
	rootful := newTestPodman(t, nil, e)
	rootful.systemHooks = true
	if r := rootful.run(t, "cat /run/northstar/secret"); r.err != nil || r.stdout != e.secretHex(t) {
		t.Errorf("a rootful podman container after setup podman:\n%s\nwant the store's secret", r)
	}

	// Remove: the conffile and the state stay, nothing else of the
	// package, and no runtime config that points at what is gone: the
	// drop-in that requires the NRI plugin goes, so once containerd is
	// restarted (as the package says) a pod starts.
	c.mustCrictl(t, "rmp", "--all", "--force")
	c.stop(t)
	if err := a.stop(t); err != nil {
		t.Errorf("agent: %v\n%s", err, a.out)
	}
	dropIn := filepath.Join(c.dir, "conf.d", "99-northstar.toml")
	if b, err := os.ReadFile(dropIn); err != nil || !strings.Contains(string(b), "required_plugins") {
		t.Fatalf("before dpkg -r the drop-in %s does not require the plugin (%v):\n%s", dropIn, err, b)
	}
	if r := mustRun(t, exec.Command("dpkg", "-r", "northstar")); !strings.Contains(r.stdout, "northstar: removed "+dropIn+"; restart containerd") {
		t.Errorf("dpkg -r did not say it removed the drop-in:\n%s", r)
	}
	if _, err := os.Stat(dropIn); err == nil {
		t.Errorf("dpkg -r left %s, which requires a plugin that is gone", dropIn)
	}
	c.start(t)
	after := c.runPod(t, "after-remove")
	c.mustCrictl(t, "rmp", "--force", after.id)
	c.stop(t)
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil && f != debConfig {
			t.Errorf("dpkg -r left %s", f)
		}
	}
	for _, f := range []string{debConfig, filepath.Join(debState, "secret.json")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("dpkg -r removed %s: %v", f, err)
		}
	}
	// Purge: nothing.
	mustRun(t, exec.Command("dpkg", "--purge", "northstar"))
	for _, f := range append(files, "/etc/northstar", debState, wants) {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("dpkg --purge left %s", f)
		}
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Status}", "northstar").Output(); len(out) > 0 && string(out) != "not-installed" {
		t.Errorf("after purge dpkg says northstar is %q", out)
	}
}

// packageFiles lists the files (not directories) the installed package owns.
func packageFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, f := range strings.Split(mustRun(t, exec.Command("dpkg", "-L", "northstar")).stdout, "\n") {
		// Stat, not Lstat: /lib is a symlink to a directory on a
		// merged-/usr system.
		if fi, err := os.Stat(f); err == nil && !fi.IsDir() {
			files = append(files, f)
		}
	}
	if len(files) < 5 {
		t.Fatalf("dpkg -L northstar lists %d files", len(files))
	}
	return files
}
