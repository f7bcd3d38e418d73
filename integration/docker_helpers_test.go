// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runtimeBinary is northstar-runtime, built once per run next to the hook
// and northstarctl in bins.dir: there the wrapper finds the hook, and
// `northstarctl setup docker` finds the wrapper.
var runtimeBinary = sync.OnceValues(func() (string, error) {
	out := filepath.Join(bins.dir, "northstar-runtime")
	return out, buildStatic("..", "./cmd/northstar-runtime", out)
})

// Debian's Docker: its CLI explicitly (the image has a newer one earlier on
// PATH, which a 20.10 daemon refuses for some flags), its dockerd.
const (
	dockerCLI = "/usr/bin/docker"
	dockerd   = "/usr/sbin/dockerd"
)

// dockerImage is the image the Docker tests run: busybox and nsapi,
// imported from a rootfs tarball (no registry here).
const dockerImage = "northstar-test-busybox"

// requiresDocker checks what testDockerd needs and builds the wrapper.
func requiresDocker(t *testing.T) string {
	t.Helper()
	requires(t, dockerd, dockerCLI, "containerd", "containerd-shim-runc-v2", "runc", "tar")
	rt, err := runtimeBinary()
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// testDockerd is a dockerd of the test's own: data root, exec root, pid
// file, socket and config file in a directory of its own, no iptables, no
// bridge; its containerd is the one dockerd starts and manages. It runs
// with NORTHSTAR_CONFIG in its environment, which reaches the runtime
// through containerd and the runc shim.
type testDockerd struct {
	dir, sock, config string
	env               []string
	cmd               *exec.Cmd
	done              chan error
	log               *os.File
}

// newDockerd prepares a dockerd whose daemon.json is daemonJSON wired by
// `northstarctl setup docker setupArgs...` with e's config, and starts it
// with an image of busybox and nsapi.
func newDockerd(t *testing.T, e *env, daemonJSON string, setupArgs ...string) *testDockerd {
	t.Helper()
	dir := worldDir(t)
	d := &testDockerd{dir: dir, sock: filepath.Join(dir, "docker.sock"), config: filepath.Join(dir, "daemon.json"),
		env: append(os.Environ(), "NORTHSTAR_CONFIG="+e.config)}
	if daemonJSON != "" {
		if err := os.WriteFile(d.config, []byte(daemonJSON), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.setup(t, e, setupArgs...)
	t.Cleanup(func() { d.cleanup(t) })
	d.start(t)
	d.importImage(t)
	return d
}

// setup runs `northstarctl setup docker` on d's daemon.json.
func (d *testDockerd) setup(t *testing.T, e *env, args ...string) result {
	t.Helper()
	return mustRun(t, exec.Command(bins.ctl, append([]string{"setup", "docker", "--config", e.config, "--daemon-json", d.config}, args...)...))
}

func (d *testDockerd) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(d.dir, "dockerd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d.log = log
	d.cmd = exec.Command(dockerd, "--config-file", d.config, "--data-root", filepath.Join(d.dir, "data"),
		"--exec-root", filepath.Join(d.dir, "exec"), "--pidfile", filepath.Join(d.dir, "docker.pid"),
		"-H", "unix://"+d.sock, "--iptables=false", "--bridge=none")
	d.cmd.Env = d.env
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(d.cmd, d.done)
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r := run(t, d.docker("version", "--format", "{{.Server.Version}}")); r.err == nil {
			return
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("dockerd exited: %v\n%s", err, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer within 90 s:\n%s", d.logTail())
		}
	}
}

// stop stops dockerd (SIGTERM, as systemd does) and waits for it, and so
// for its containerd: dockerd stops the containerd it manages.
func (d *testDockerd) stop(t *testing.T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("dockerd did not stop within 60 s:\n%s", d.logTail())
	}
	d.cmd = nil
	d.log.Close()
}

// restart stops and starts dockerd (and so its containerd), and returns
// the pids of the containerd before and after.
func (d *testDockerd) restart(t *testing.T) (oldPid, newPid int) {
	t.Helper()
	oldPid = d.containerdPid(t)
	d.stop(t)
	d.start(t)
	return oldPid, d.containerdPid(t)
}

// containerdPid is the pid of dockerd's containerd, from its pid file.
func (d *testDockerd) containerdPid(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, "exec", "containerd", "containerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// reload sends dockerd SIGHUP: it rereads daemon.json's runtimes and
// default runtime.
func (d *testDockerd) reload(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload is logged once done.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.logTail(), "Reloaded configuration"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not reload within 30 s:\n%s", d.logTail())
		}
	}
}

func (d *testDockerd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// docker is Debian's docker CLI talking to d.
func (d *testDockerd) docker(args ...string) *exec.Cmd {
	return exec.Command(dockerCLI, append([]string{"-H", "unix://" + d.sock}, args...)...)
}

// importImage imports dockerImage: busybox and nsapi, from a tarball.
func (d *testDockerd) importImage(t *testing.T) {
	t.Helper()
	b := &bundle{rootfs: filepath.Join(d.dir, "rootfs")}
	mkBusybox(t, b.rootfs)
	b.withHelper(t, nsapiBinary)
	cmd := exec.Command("sh", "-c", `tar -C "$1" -c . | "$2" -H "unix://$3" import - "$4"`, "sh", b.rootfs, dockerCLI, d.sock, dockerImage)
	mustRun(t, cmd)
}

// run runs `docker run --rm --network none [args...] IMAGE sh -c script`.
func (d *testDockerd) run(t *testing.T, script string, args ...string) result {
	t.Helper()
	all := append(append([]string{"run", "--rm", "--network", "none"}, args...), dockerImage, "sh", "-c", script)
	return run(t, d.docker(all...))
}

// cleanup removes d's containers, stops it, ends what it left behind (the
// runc shims of live-restore containers) and unmounts what it mounted
// under d.dir, so that worldDir's cleanup can remove it.
func (d *testDockerd) cleanup(t *testing.T) {
	if d.cmd != nil {
		if r := run(t, d.docker("ps", "-aq")); r.err == nil {
			if ids := strings.Fields(r.stdout); len(ids) > 0 {
				_ = run(t, d.docker(append([]string{"rm", "-f"}, ids...)...))
			}
		}
		d.stop(t)
	}
	exec := filepath.Join(d.dir, "exec")
	for _, pid := range processesWith(exec) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(d.dir) {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
}

// processesWith returns the processes whose command line mentions s.
func processesWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsUnder returns the mount points at or under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (fs[4] == dir || strings.HasPrefix(fs[4], dir+"/")) {
			ms = append(ms, fs[4])
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}
