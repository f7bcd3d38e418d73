// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/store"
)

// result is what a command did, printed whole when a test fails.
type result struct {
	cmd            string
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("$ %s\nerr: %v\n--- stdout\n%s--- stderr\n%s", r.cmd, r.err, r.stdout, r.stderr)
}

// run executes cmd with a timeout (a minute) and captures its output.
func run(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	return runWithin(t, time.Minute, cmd)
}

// runWithin is run with the timeout d, for commands that take long on a
// loaded machine (building the package, lintian).
func runWithin(t *testing.T, d time.Duration, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &errb
	}
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return result{cmd: strings.Join(cmd.Args, " "), err: err}
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		err = fmt.Errorf("timed out: %w", <-done)
	}
	return result{cmd: strings.Join(cmd.Args, " "), stdout: out.String(), stderr: errb.String(), err: err}
}

// mustRun runs cmd and fails the test, printing everything, if it fails.
func mustRun(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	r := run(t, cmd)
	if r.err != nil {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

// env is one northstar installation: a config and a state directory.
type env struct {
	dir    string // world-traversable working directory
	config string
	cfg    *config.Config
}

// newEnv writes a config using the host-key sealer and runs
// `northstarctl init`. owner, when non-nil, receives the directory (for
// rootless runs).
func newEnv(t *testing.T, extraTOML string, owner *account) *env {
	t.Helper()
	return newEnvWith(t, "sealer = \"host\"\n"+extraTOML, owner)
}

// newTPMEnv is newEnv with the TPM sealer on tpm (a test swtpm or a proxy
// in front of one), bound to pcrs (a TOML list such as "[16]").
func newTPMEnv(t *testing.T, tpm tpmDevice, pcrs string, owner *account) *env {
	t.Helper()
	return newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = %s\n", tpm.path(), pcrs), owner)
}

// newEnvWith writes a config with body after state_dir and runs init.
func newEnvWith(t *testing.T, body string, owner *account) *env {
	t.Helper()
	return envIn(t, worldDir(t), body, owner)
}

// envIn is newEnvWith in dir (its state directory is dir/state).
func envIn(t *testing.T, dir, body string, owner *account) *env {
	t.Helper()
	e := &env{dir: dir, config: filepath.Join(dir, "config.toml")}
	toml := fmt.Sprintf("state_dir = %q\n%s", filepath.Join(dir, "state"), body)
	if err := os.WriteFile(e.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.config)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	cmd := exec.Command(bins.ctl, "init", "--config", e.config)
	if owner != nil {
		owner.chownR(t, dir)
		owner.apply(cmd)
	}
	mustRun(t, cmd)
	return e
}

// ctl runs northstarctl with the env's config.
func (e *env) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, exec.Command(bins.ctl, append(args, "--config", e.config)...))
}

// store is e's store, as the hook and northstarctl open it.
func (e *env) store(t *testing.T) *store.Store {
	t.Helper()
	st, err := configured.Store(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// secretHex unseals the current secret the way the hook does, for checks.
func (e *env) secretHex(t *testing.T) string {
	t.Helper()
	sec, _, err := e.store(t).Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Zero()
	return string(sec.AppendHex(nil))
}

// worldDir makes a temporary directory every user can traverse.
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "northstar-it-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Containers may have left read-only files; best effort.
		_ = exec.Command("rm", "-rf", dir).Run()
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// bundle is an OCI bundle with a busybox rootfs.
type bundle struct {
	dir, rootfs string
	spec        *specs.Spec
}

// newBundle makes a busybox bundle from `runc spec` (or `runc spec
// --rootless`) whose process runs `sh -c script`.
func newBundle(t *testing.T, parent string, rootless bool, script string) *bundle {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "bundle-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &bundle{dir: dir, rootfs: filepath.Join(dir, "rootfs")}
	mkBusybox(t, b.rootfs)
	args := []string{"spec", "--bundle", dir}
	if rootless {
		args = append(args, "--rootless")
	}
	mustRun(t, exec.Command("runc", args...))
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	b.spec = new(specs.Spec)
	if err := json.Unmarshal(data, b.spec); err != nil {
		t.Fatal(err)
	}
	b.spec.Process.Terminal = false
	b.spec.Process.Args = []string{"sh", "-c", script}
	b.spec.Root.Path = "rootfs"
	b.spec.Hostname = "northstar-test"
	return b
}

// mkBusybox writes a minimal rootfs: busybox-static and its applet links.
func mkBusybox(t *testing.T, rootfs string) {
	t.Helper()
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "ls", "id", "stat", "grep", "sleep", "touch", "echo", "test", "wc", "head", "mount", "rm", "mkdir", "awk", "cut", "tr", "readlink"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000:user:/:/bin/sh\n"), 0o644)
	_ = os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\nuser:x:1000:\n"), 0o644)
}

// withHook adds the northstar hook at stage ("createRuntime", ...).
func (b *bundle) withHook(stage, configPath string) *bundle {
	return b.withHookBinary(bins.hook, stage, configPath)
}

// withAgentHook is withHook with northstar-agent-hook, the hook for hosts
// where the agent runs.
func (b *bundle) withAgentHook(stage, configPath string) *bundle {
	return b.withHookBinary(bins.agentHook, stage, configPath)
}

func (b *bundle) withHookBinary(path, stage, configPath string) *bundle {
	h := specs.Hook{Path: path, Args: []string{filepath.Base(path), "--config", configPath}}
	if b.spec.Hooks == nil {
		b.spec.Hooks = &specs.Hooks{}
	}
	switch stage {
	case "createRuntime":
		b.spec.Hooks.CreateRuntime = append(b.spec.Hooks.CreateRuntime, h)
	case "prestart":
		b.spec.Hooks.Prestart = append(b.spec.Hooks.Prestart, h) //nolint:staticcheck // older runtimes
	case "createContainer":
		b.spec.Hooks.CreateContainer = append(b.spec.Hooks.CreateContainer, h)
	default:
		panic("unknown stage " + stage)
	}
	return b
}

// write stores the spec as config.json.
func (b *bundle) write(t *testing.T) {
	t.Helper()
	data, err := json.MarshalIndent(b.spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// containerSeq numbers containers; tests start them from many goroutines.
var containerSeq atomic.Int64

// runcRunAll runs the bundles at the same time and returns their results in
// order.
func runcRunAll(t *testing.T, bundles []*bundle) []result {
	t.Helper()
	for _, b := range bundles {
		b.write(t)
	}
	results := make([]result, len(bundles))
	var wg sync.WaitGroup
	for i, b := range bundles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = b.runcRun(t)
		}()
	}
	wg.Wait()
	return results
}

// runcRun runs the bundle to completion with `runc run` as root.
func (b *bundle) runcRun(t *testing.T) result {
	t.Helper()
	return b.runWith(t, "runc")
}

// runWith runs the bundle in the foreground with runtime (runc or crun,
// which share the command line), rootful.
func (b *bundle) runWith(t *testing.T, runtime string) result {
	t.Helper()
	return b.runWrapped(t, runtime)
}

// runWrapped is runWith with the runtime's command run by wrap (a
// command and its arguments, before the runtime's argv): strace, say.
func (b *bundle) runWrapped(t *testing.T, runtime string, wrap ...string) result {
	t.Helper()
	b.write(t)
	id := fmt.Sprintf("ns-it-%d-%d", os.Getpid(), containerSeq.Add(1))
	argv := []string{runtime, "--root", filepath.Join(filepath.Dir(b.dir), runtime+"-root")}
	if runtime == "crun" {
		// crun 1.8 refuses this host's hybrid cgroup layout (hugetlb is
		// bound to the v2 hierarchy at /sys/fs/cgroup/unified): run it
		// in a mount namespace of its own without that hierarchy, where
		// it sees plain cgroup v1. The hook does not care about cgroups.
		argv = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"`, "sh"}, argv...)
	}
	t.Cleanup(func() { _ = exec.Command(argv[0], append(argv[1:], "delete", "-f", id)...).Run() })
	runArgv := append(append(wrap[:len(wrap):len(wrap)], argv...), "run", "--bundle", b.dir, id)
	return run(t, exec.Command(runArgv[0], runArgv[1:]...))
}

// isSecretHex reports whether s is exactly 64 lowercase hex characters.
func isSecretHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// field returns the value after "key=" on its own line of out.
func field(out, key string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

// detached is a container started in the background with runc run
// --detach, deleted at the test's end. Its root filesystem is writable, so
// that its script can leave output in /out for waitOut.
type detached struct {
	b        *bundle
	root, id string
}

// runDetached starts the bundle with runc run --detach under runc root
// root (a directory of the test's) as container id.
func (b *bundle) runDetached(t *testing.T, root, id string) *detached {
	t.Helper()
	b.spec.Root.Readonly = false
	b.write(t)
	t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	// Files, not pipes: the container inherits runc's stdio, and a pipe
	// would keep Run waiting for as long as the container lives.
	stderr, err := os.CreateTemp(b.dir, "runc-stderr-")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command("runc", "--root", root, "run", "--detach", "--bundle", b.dir, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, stderr
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		t.Fatalf("runc run --detach %s: %v\n%s", id, err, msg)
	}
	return &detached{b: b, root: root, id: id}
}

// exec runs argv in the container.
func (d *detached) exec(t *testing.T, argv ...string) result {
	t.Helper()
	return run(t, exec.Command("runc", append([]string{"--root", d.root, "exec", d.id}, argv...)...))
}

// sh runs a shell script in the container and returns its trimmed stdout,
// failing the test if it fails.
func (d *detached) sh(t *testing.T, script string) string {
	t.Helper()
	r := d.exec(t, "sh", "-c", script)
	if r.err != nil {
		t.Fatalf("in container %s:\n%s", d.id, r)
	}
	return strings.TrimSpace(r.stdout)
}

// delete removes the container now.
func (d *detached) delete(t *testing.T) {
	t.Helper()
	mustRun(t, exec.Command("runc", "--root", d.root, "delete", "-f", d.id))
}

// waitOut waits until the container's rootfs/out holds want, and returns
// it.
func (d *detached) waitOut(t *testing.T, want string, timeout time.Duration) string {
	t.Helper()
	var out []byte
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		out, _ = os.ReadFile(filepath.Join(d.b.rootfs, "out"))
		if strings.Contains(string(out), want) {
			return string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s never printed %q; it printed:\n%s", d.id, want, out)
		}
	}
}

// pid is the container's init process, as runc state says.
func (d *detached) pid(t *testing.T) int {
	t.Helper()
	r := mustRun(t, exec.Command("runc", "--root", d.root, "state", d.id))
	var st struct{ Pid int }
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Pid == 0 {
		t.Fatalf("runc state %s: %v\n%s", d.id, err, r)
	}
	return st.Pid
}
