// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestShimAddress(t *testing.T) {
	for _, tt := range []struct {
		cmdline, want string
	}{
		// containerd-shim-runc-v2's daemon as Docker 20.10 leaves it.
		{"/usr/bin/containerd-shim-runc-v2\x00-namespace\x00moby\x00-id\x00abc\x00-address\x00/var/run/docker/containerd/containerd.sock\x00", "/var/run/docker/containerd/containerd.sock"},
		{"containerd-shim\x00--address=/run/containerd/containerd.sock\x00", "/run/containerd/containerd.sock"},
		{"shim\x00-address\x00unix:///run/c.sock\x00", "/run/c.sock"},
		{"shim\x00-namespace\x00k8s.io\x00-id\x00x\x00", ""},
		{"shim\x00-address\x00", ""},
		{"shim\x00--\x00-address\x00/x\x00", ""},
		{"-address\x00/argv0-is-not-a-flag\x00", ""},
		{"", ""},
	} {
		if got := shimAddress([]byte(tt.cmdline)); got != tt.want {
			t.Errorf("shimAddress(%q) = %q, want %q", tt.cmdline, got, tt.want)
		}
	}
}

func TestListenerPid(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if pid, err := listenerPid(sock); err != nil || pid != os.Getpid() {
		t.Errorf("listenerPid = %d, %v; want this process, %d", pid, err, os.Getpid())
	}
	if _, err := listenerPid(filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("no socket: err = %v", err)
	}
}

// fakeProcess starts this test binary under the file name name, with
// args on its command line, and returns its pid. It waits on its stdin.
func fakeProcess(t *testing.T, name string, args ...string) int {
	t.Helper()
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^TestFakeProcess$", "fake"}, args...)...)
	cmd.Env = append(os.Environ(), "RUNCWRAP_FAKE_PROCESS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	// Start returns once the child's close-on-exec pipe closed, which
	// execve does before it lays out the new command line: until then
	// /proc/PID/exe is already the new binary but /proc/PID/cmdline is
	// empty. A real shim has run for long by the time a runtime asks.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); bytes.Contains(b, []byte("\x00fake\x00")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) never showed its command line", name, cmd.Process.Pid)
		}
	}
	return cmd.Process.Pid
}

// TestFakeProcess is the body of fakeProcess's children.
func TestFakeProcess(t *testing.T) {
	if os.Getenv("RUNCWRAP_FAKE_PROCESS") != "1" {
		t.Skip("run by fakeProcess")
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// TestFindEngine: under a runc shim, the containerd listening at the
// shim's -address (here this test, listening on a socket of its own);
// under a process named containerd, that process; under neither, none.
func TestFindEngine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	shim := fakeProcess(t, "containerd-shim-runc-v2", "-namespace", "moby", "-id", "c1", "-address", sock)
	if e, err := findEngine(shim); err != nil || e.pid != os.Getpid() || !strings.Contains(e.how, sock) {
		t.Errorf("under a runc shim: %+v, %v; want this process (%d)", e, err, os.Getpid())
	}
	cd := fakeProcess(t, "containerd", "--config", "/x")
	if e, err := findEngine(cd); err != nil || e.pid != cd {
		t.Errorf("under containerd: %+v, %v; want %d", e, err, cd)
	}
	other := fakeProcess(t, "conmon")
	if e, err := findEngine(other); err != nil || e.pid != 0 {
		t.Errorf("under conmon: %+v, %v; want none", e, err)
	}
	// A shim whose containerd is gone: fail closed, naming the socket.
	gone := fakeProcess(t, "containerd-shim-runc-v2", "-address", filepath.Join(t.TempDir(), "gone.sock"))
	if _, err := findEngine(gone); err == nil || !strings.Contains(err.Error(), "gone.sock") {
		t.Errorf("shim of a stopped containerd: err = %v", err)
	}
	noaddr := fakeProcess(t, "containerd-shim-runc-v2", "-id", "x")
	if _, err := findEngine(noaddr); err == nil || !strings.Contains(err.Error(), "no -address") {
		t.Errorf("shim without -address: err = %v", err)
	}
}
