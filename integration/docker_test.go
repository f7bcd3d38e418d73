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
	"sync"
	"testing"
	"time"
)

// Docker 20.10 (Debian 12's docker.io) with northstar-runtime, wired by
// `northstarctl setup docker` (DESIGN.md §18).

// TestDockerRuntime: `docker run --runtime northstar` delivers the secret
// as runc does (owner the container's user, 0400, read-only mount) and
// the container's own API socket; a container of the default runtime
// (runc) gets nothing; after `setup docker --default` and a reload, every
// `docker run` gets the secret and `--runtime runc` opts one out. The
// settings setup found in daemon.json stay in force.
func TestDockerRuntime(t *testing.T) {
	requiresDocker(t)
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	d := newDockerd(t, e, "{\n  \"log-level\": \"info\",\n  \"default-ulimits\": {\"nofile\": {\"Name\": \"nofile\", \"Hard\": 1024, \"Soft\": 512}}\n}\n")

	const probe = `cat /run/northstar/secret; echo; stat -c '%u:%g %a' /run/northstar/secret; grep ' /run/northstar ' /proc/self/mountinfo; ulimit -n`
	r := d.run(t, probe, "--runtime", "northstar", "--user", "1000:1000")
	lines := strings.SplitN(r.stdout, "\n", 4)
	if r.err != nil || len(lines) != 4 || lines[0] != e.secretHex(t) || lines[1] != "1000:1000 400" || !strings.Contains(lines[2], " ro,") {
		t.Fatalf("docker run --runtime northstar: want the store's secret, 0400 owned by the container user, on a read-only mount:\n%s", r)
	}
	if strings.TrimSpace(lines[3]) != "512" {
		t.Errorf("daemon.json's default-ulimits lost by setup: ulimit -n %q", lines[3])
	}
	if r.stderr != "" {
		t.Errorf("the runtime printed on success:\n%s", r)
	}

	// The container's own API socket; its identity is its container id.
	r = d.run(t, "nsapi identity; cat /etc/hostname; ls -A /run/northstar/api; touch /run/northstar/api/x 2>/dev/null && echo WROTE; true", "--runtime", "northstar")
	f := strings.Fields(r.stdout)
	if r.err != nil || len(f) != 4 || len(f[0]) != 64 || !strings.HasPrefix(f[0], f[2]) || f[3] != "api.sock" {
		t.Errorf("want the container id as identity and api.sock alone, read-only:\n%s", r)
	}

	const absent = "test -e /run/northstar/secret && echo PRESENT || echo ABSENT"
	if r := d.run(t, absent); r.err != nil || strings.TrimSpace(r.stdout) != "ABSENT" {
		t.Errorf("a container of the default runtime (runc):\n%s", r)
	}

	// northstar as the default runtime.
	d.setup(t, e, "--default")
	d.reload(t)
	if r := d.run(t, "cat /run/northstar/secret"); r.err != nil || r.stdout != e.secretHex(t) {
		t.Errorf("docker run with northstar the default runtime:\n%s", r)
	}
	if r := d.run(t, absent, "--runtime", "runc"); r.err != nil || strings.TrimSpace(r.stdout) != "ABSENT" {
		t.Errorf("docker run --runtime runc (the opt-out):\n%s", r)
	}
	var daemon map[string]any
	if b, err := os.ReadFile(d.config); err != nil || json.Unmarshal(b, &daemon) != nil || daemon["log-level"] != "info" || daemon["default-runtime"] != "northstar" {
		t.Errorf("daemon.json after setup --default: %v\n%s", err, b)
	}
}

// TestDockerOptOut: Docker 20.10 passes no annotations into config.json
// (its CLI has no --annotation; Docker 28's refuses it against a 1.41
// API), so the per-container opt-out there is the runtime: `--runtime
// runc`. The bundle Docker writes has no annotations, and the hook runs
// for every northstar container. Without its config the runtime refuses
// to create a container, one line in Docker's error, and still lets
// Docker remove one.
func TestDockerOptOut(t *testing.T) {
	requiresDocker(t)
	e := newEnv(t, "", nil)
	d := newDockerd(t, e, "", "--default")
	if r := run(t, d.docker("run", "--help")); r.err != nil || strings.Contains(r.stdout, "--annotation") {
		t.Fatalf("Debian's docker run has --annotation now: test it as the opt-out:\n%s", r)
	}
	if _, err := os.Stat("/usr/local/bin/docker"); err == nil {
		r := run(t, exec.Command("/usr/local/bin/docker", "-H", "unix://"+d.sock, "run", "--rm", "--annotation", "io.northstar.secret.disable=true", dockerImage, "true"))
		if r.err == nil || !strings.Contains(r.stderr, "requires API version 1.43") {
			t.Errorf("a newer CLI's --annotation against dockerd 20.10:\n%s", r)
		}
	}
	r := run(t, d.docker("run", "-d", "--network", "none", dockerImage, "sleep", "600"))
	if r.err != nil {
		t.Fatalf("docker run -d:\n%s", r)
	}
	id := strings.TrimSpace(r.stdout)
	spec, err := os.ReadFile(filepath.Join(d.dir, "exec", "containerd", "daemon", "io.containerd.runtime.v2.task", "moby", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Annotations map[string]string
		Hooks       struct{ CreateRuntime []struct{ Path string } }
	}
	if err := json.Unmarshal(spec, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Annotations) != 0 || len(s.Hooks.CreateRuntime) != 1 || filepath.Base(s.Hooks.CreateRuntime[0].Path) != "northstar-hook" {
		t.Errorf("the bundle of a default-runtime container: annotations %v, createRuntime hooks %v", s.Annotations, s.Hooks.CreateRuntime)
	}
	if r := run(t, d.docker("exec", id, "cat", "/run/northstar/secret")); r.err != nil || r.stdout != e.secretHex(t) {
		t.Errorf("docker exec into a northstar container:\n%s", r)
	}

	// Fail closed, and say so where Docker shows runc's errors; the
	// commands that clean up need no config.
	if err := os.Rename(e.config, e.config+".away"); err != nil {
		t.Fatal(err)
	}
	r = d.run(t, "echo STARTED")
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "OCI runtime create failed: northstar-runtime: config "+e.config+" does not exist") {
		t.Errorf("a start without the northstar config:\n%s", r)
	}
	if r := run(t, d.docker("rm", "-f", id)); r.err != nil {
		t.Errorf("docker rm -f without the northstar config:\n%s", r)
	}
}

// TestDockerRestartRotates: a dockerd restart restarts its containerd;
// the first containers started after it (several at once) rotate the
// secret exactly once, and a container that ran through the restart
// (live-restore) reads the new secret within 2 s, the old one beside it.
func TestDockerRestartRotates(t *testing.T) {
	requiresDocker(t)
	e, sock := liveEnv(t, "5m", "")
	startAgent(t, e, sock)
	d := newDockerd(t, e, "{\"live-restore\": true}\n", "--default")

	r := run(t, d.docker("run", "-d", "--network", "none", dockerImage, "sleep", "600"))
	if r.err != nil {
		t.Fatalf("docker run -d:\n%s", r)
	}
	long := strings.TrimSpace(r.stdout)
	read := func(name string) string {
		return run(t, d.docker("exec", long, "cat", "/run/northstar/"+name)).stdout
	}
	old, gen := e.secretHex(t), e.record(t).Generation
	if got := read("secret"); got != old {
		t.Fatalf("the long-running container reads %q, the store holds %s", got, old)
	}
	oldPid, newPid := d.restart(t)
	if oldPid == newPid {
		t.Fatalf("dockerd's containerd did not restart (pid %d)", oldPid)
	}
	var wg sync.WaitGroup
	results := make([]result, 3)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = d.run(t, "cat /run/northstar/secret") }()
	}
	wg.Wait()
	new := e.secretHex(t)
	if g := e.record(t).Generation; g != gen+1 || new == old {
		t.Fatalf("after the restart: generation %d, want exactly one rotation from %d", g, gen)
	}
	for _, r := range results {
		if r.err != nil || r.stdout != new {
			t.Errorf("a container started after the restart:\n%s", r)
		}
	}
	if want := fmt.Sprintf("/pid:%d/", newPid); !strings.Contains(e.record(t).LifecycleID, want) {
		t.Errorf("lifecycle %q is not that of dockerd's new containerd (pid %d)", e.record(t).LifecycleID, newPid)
	}
	t0 := time.Now()
	for read("secret") != new {
		if time.Since(t0) > 2*time.Second {
			t.Fatalf("2 s after the rotation the container started before the restart reads %q, want %s", read("secret"), new)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the container started before the dockerd restart read the new secret %v after the rotating starts", time.Since(t0).Round(time.Millisecond))
	if got := read("secret.previous"); got != old {
		t.Errorf("secret.previous %q, want %s", got, old)
	}
	// No more rotations while the containerd lives.
	if r := d.run(t, "true"); r.err != nil || e.record(t).Generation != gen+1 {
		t.Errorf("a later start rotated again: generation %d\n%s", e.record(t).Generation, r)
	}
}
