// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/testenv"
)

// shimRegistry is a registry with the API, and a fresh bundle directory.
func shimRegistry(t *testing.T) (*Containers, string) {
	t.Helper()
	testenv.RequireRoot(t, "the API directories are mounts")
	dir := t.TempDir()
	c, err := Open(context.Background(), options(hostStore(t, dir), dir), gen1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	bundle := filepath.Join(dir, "bundle")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	return c, bundle
}

// waitPrepared waits until c prepares n containers.
func waitPrepared(t *testing.T, c *Containers, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.mu.Lock()
		got := len(c.prepared)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d containers prepared, want %d", got, n)
		}
	}
}

// waitGone waits until path (what) does not exist: Forget lists a
// container as gone before it removes its directory, outside the
// registry's lock.
func waitGone(t *testing.T, path, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := os.Lstat(path)
		if os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, 5 s after: %v", what, err)
		}
	}
}

// TestPrepareBundleForgetsWhenTheBundleGoes: the shim's container gets
// its API socket at once (listening, its connections held until the
// bind); if its bundle goes before runc created it (a failed creation),
// the agent forgets it and its directory.
func TestPrepareBundleForgetsWhenTheBundleGoes(t *testing.T) {
	c, bundle := shimRegistry(t)
	r, err := c.PrepareBundle(control.PrepareRequest{ID: "c1", Identity: "web", Bundle: bundle, API: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.SecretDir != "" || r.APIDir == "" {
		t.Fatalf("reply %+v", r)
	}
	if fi, err := os.Lstat(filepath.Join(r.APIDir, "api.sock")); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("no API socket before the container exists: %v", err)
	}
	if _, err := c.PrepareBundle(control.PrepareRequest{ID: "c1", Identity: "web", Bundle: bundle, API: true}); err == nil {
		t.Error("the same bundle prepared twice")
	}
	if err := os.RemoveAll(bundle); err != nil {
		t.Fatal(err)
	}
	waitPrepared(t, c, 0)
	waitGone(t, r.APIDir, "the forgotten container's directory")
}

// TestPrepareBundleRefusesAnEarlierPid: a bundle that names an init
// process before the container exists is refused.
func TestPrepareBundleRefusesAnEarlierPid(t *testing.T) {
	c, bundle := shimRegistry(t)
	if err := os.WriteFile(filepath.Join(bundle, InitPidFile), []byte("1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PrepareBundle(control.PrepareRequest{ID: "c1", Identity: "web", Bundle: bundle, API: true}); err == nil || !strings.Contains(err.Error(), "exists before the container") {
		t.Errorf("PrepareBundle = %v", err)
	}
}

// TestPrepareBundleBindsAtInitPid: when the pid file appears the agent
// binds; a process whose mounts are not the agent's (here one in the
// agent's own namespace) fails the check, the container is forgotten,
// and the process, which runc did not create, is not killed.
func TestPrepareBundleBindsAtInitPid(t *testing.T) {
	c, bundle := shimRegistry(t)
	r, err := c.PrepareBundle(control.PrepareRequest{ID: "c1", Identity: "web", Bundle: bundle, API: true})
	if err != nil {
		t.Fatal(err)
	}
	p := sleeper(t)
	// As runc writes it: a temporary file renamed.
	tmp := filepath.Join(bundle, ".init.pid")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(p.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(bundle, InitPidFile)); err != nil {
		t.Fatal(err)
	}
	waitPrepared(t, c, 0)
	waitGone(t, r.APIDir, "the refused container's directory")
	if err := p.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("a process runc did not create was killed: %v", err)
	}
	c.mu.Lock()
	n := len(c.byKey)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d registrations, want none", n)
	}
}
