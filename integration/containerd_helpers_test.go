// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/store"
)

// shimBinary is containerd-shim-northstar-v2, built once per run next to
// the hook in bins.dir (where the shim looks for it first).
var shimBinary = sync.OnceValues(func() (string, error) {
	out := filepath.Join(bins.dir, "containerd-shim-northstar-v2")
	// As make build links it (cgo for its C fast path, static), and as an
	// install writes it.
	return out, buildCgo("containerd-shim-northstar-v2", out)
})

// requiresContainerd checks what scripts/rootless-containerd.sh needs.
func requiresContainerd(t *testing.T) *account {
	t.Helper()
	requires(t, "containerd", "ctr", "containerd-shim-runc-v2", "runc", "rootlesskit", "slirp4netns",
		"newuidmap", "newgidmap", "nsenter", "setpriv", "flock", "ps")
	a := unprivileged(t)
	if _, err := shimBinary(); err != nil {
		t.Fatal(err)
	}
	return a
}

// ctrRunFlags: on this cgroup v1 host an unprivileged containerd can set
// neither a cgroup path nor CPU shares.
var ctrRunFlags = []string{"--cgroup", "", "--cpu-shares", "0"}

// rootlessContainerd is a private containerd run by the test user inside
// rootlesskit, through scripts/rootless-containerd.sh.
type rootlessContainerd struct {
	dir    string // the script's DIR
	script string
	rootfs string // busybox rootfs owned by the user (container root)
	seq    int
}

// startContainerd starts a rootless containerd whose PATH has the shim and
// hook, with env (NORTHSTAR_CONFIG=..., XDG_CONFIG_HOME=...) in its
// environment. Cleanup stops it and everything in its user namespace, and
// fails the test if a process survives.
func startContainerd(t *testing.T, a *account, env ...string) *rootlessContainerd {
	t.Helper()
	script, err := filepath.Abs("../scripts/rootless-containerd.sh")
	if err != nil {
		t.Fatal(err)
	}
	work := worldDir(t)
	c := &rootlessContainerd{dir: filepath.Join(work, "ctd"), script: script, rootfs: filepath.Join(work, "rootfs")}
	mkBusybox(t, c.rootfs)
	a.chownR(t, c.rootfs)

	userns := ""
	t.Cleanup(func() {
		r := run(t, exec.Command(script, "stop", c.dir))
		if r.err != nil {
			t.Errorf("stop containerd:\n%s", r)
		}
		if left := processesInUserns(userns); len(left) > 0 {
			t.Errorf("processes left in the rootless user namespace: %v", left)
		}
	})
	cmd := exec.Command(script, "start", c.dir)
	cmd.Env = append(os.Environ(), append([]string{"NORTHSTAR_BIN=" + bins.dir}, env...)...)
	mustRun(t, cmd)
	child, err := os.ReadFile(filepath.Join(c.dir, "rootlesskit", "child_pid"))
	if err != nil {
		t.Fatal(err)
	}
	userns, _ = os.Readlink(fmt.Sprintf("/proc/%s/ns/user", strings.TrimSpace(string(child))))
	return c
}

// processesInUserns lists the live processes in the user namespace ns
// ("user:[inode]").
func processesInUserns(ns string) []string {
	if ns == "" {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var left []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, _ := os.Readlink("/proc/" + e.Name() + "/ns/user"); l != ns {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		left = append(left, e.Name()+":"+strings.TrimSpace(string(comm)))
	}
	return left
}

// restart stops containerd and starts a new containerd process in the same
// namespaces (shims and containers keep running): a new runtime lifecycle.
// env overrides the saved environment.
func (c *rootlessContainerd) restart(t *testing.T, env ...string) (oldPid, newPid int) {
	t.Helper()
	oldPid = c.pid(t)
	cmd := exec.Command(c.script, "restart-containerd", c.dir)
	cmd.Env = append(os.Environ(), env...)
	mustRun(t, cmd)
	newPid = c.pid(t)
	if oldPid == newPid {
		t.Fatalf("containerd kept pid %d across a restart", oldPid)
	}
	return oldPid, newPid
}

func (c *rootlessContainerd) pid(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "containerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// ctr runs ctr as the user inside rootlesskit's namespaces, talking to this
// containerd.
func (c *rootlessContainerd) ctr(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, exec.Command(c.script, append([]string{"exec", c.dir, "ctr"}, args...)...))
	r.cmd = "ctr " + shellJoin(args)
	return r
}

// newID returns a fresh container id.
func (c *rootlessContainerd) newID(prefix string) string {
	c.seq++
	return fmt.Sprintf("%s-%d", prefix, c.seq)
}

// runArgs are the `ctr run` arguments for a busybox container of runtime
// (a runtime name or an absolute shim path) running `sh -c script`.
func (c *rootlessContainerd) runArgs(runtime, id string, detach bool, script string) []string {
	args := []string{"run"}
	if detach {
		args = append(args, "-d", "--null-io")
	} else {
		args = append(args, "--rm")
	}
	args = append(args, ctrRunFlags...)
	args = append(args, "--runtime", runtime, "--rootfs", c.rootfs, id, "/bin/sh", "-c", script)
	return args
}

// readSecret runs a northstar container that prints its secret, and
// returns it; the test fails unless it is 64 lowercase hex characters.
func (c *rootlessContainerd) readSecret(t *testing.T, runtime string) string {
	t.Helper()
	r := c.ctr(t, c.runArgs(runtime, c.newID("read"), false, "cat /run/northstar/secret")...)
	if r.err != nil {
		t.Fatalf("container failed:\n%s", r)
	}
	if !isSecretHex(r.stdout) {
		t.Fatalf("container read %q, want 64 lowercase hex characters\n%s", r.stdout, r)
	}
	return r.stdout
}

// bundleSpec reads the config.json containerd wrote (and the shim edited)
// for a container that still exists.
func (c *rootlessContainerd) bundleSpec(t *testing.T, id string) *specs.Spec {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", "default", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// rotationsLogged counts the rotations shims reported in containerd's log
// (shim start logs reach it through the bundle's log pipe).
func (c *rootlessContainerd) rotationsLogged(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "northstar: runtime restarted, new lifecycle secret")
}

// record returns the stored lifecycle record of e.
func (e *env) record(t *testing.T) *store.Record {
	t.Helper()
	rec, err := e.store(t).Current()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// lifecycleRE matches the shim's lifecycle ids.
var lifecycleRE = regexp.MustCompile(`^boot:[0-9a-f-]{36}/pid:(\d+)/start:\d+$`)

// lifecyclePid returns the containerd pid a lifecycle id names, or 0.
func lifecyclePid(id string) int {
	m := lifecycleRE.FindStringSubmatch(id)
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$;&|<>*?()") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}
