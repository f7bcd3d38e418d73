// SPDX-License-Identifier: Apache-2.0

package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/internal/testmounts"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/store"
)

func hostStore(dir string) *store.Store {
	return store.New(dir, seal.NewHost(filepath.Join(dir, seal.HostKeyFile)))
}

// TestRunFollowsANewBlobOfTheSameGeneration: the agent reloads when the
// record's blob changes even though its generation does not.
func TestRunFollowsANewBlobOfTheSameGeneration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "state")
	st := hostStore(dir)
	if _, _, err := st.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Socket: sock, Store: st, Unseal: InProcess(st), Log: nopWriter{}}) }()
	defer func() { cancel(); <-done }()
	waitCurrent := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			f, err := control.FetchCurrent(ctx, sock, st)
			if err == nil {
				f.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent does not serve the stored secret: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCurrent()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	waitCurrent()
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// initStore is an initialized store in dir/state with the host sealer.
func initStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	st := hostStore(filepath.Join(dir, "state"))
	if _, _, err := st.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	return st
}

// runAgent runs the agent with the API in this process until the test
// (or stop) ends it.
func runAgent(t testing.TB, st *store.Store, sock, auditPath string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Socket: sock, Store: st, Unseal: InProcess(st), Log: io.Discard,
			Live: true, Grace: time.Minute, API: &registry.APIOptions{TokenTTL: time.Minute, AuditPath: auditPath}})
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("agent did not listen: %v", <-done)
		}
	}
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func getIdentity(t *testing.T, sock string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	rsp, err := c.Get("http://northstar/v1/identity")
	if err != nil {
		return "", err
	}
	defer rsp.Body.Close()
	data, _ := io.ReadAll(rsp.Body)
	var v struct{ Identity string }
	if err := json.Unmarshal(data, &v); err != nil {
		return "", err
	}
	return v.Identity, nil
}

func sleeper(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestRegistrations: a registered container gets a socket that
// answers as its identity; the socket goes when the container's process
// does; a restarted agent serves the running containers again; the audit
// log verifies.
func TestRegistrations(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// The containers' API filesystems stay mounted for the next agent.
	t.Cleanup(func() { testmounts.UnmountUnder(dir) })
	st := initStore(t, dir)
	sock := filepath.Join(dir, "agent", "agent.sock")
	auditPath := filepath.Join(dir, "audit.log")
	stop := runAgent(t, st, sock, auditPath)

	if _, err := control.RegisterProcess(ctx, sock, "../x", "client", os.Getpid(), control.Request{API: true}); err == nil || !strings.Contains(err.Error(), "container id") {
		t.Errorf("a path as container id: %v", err)
	}
	if _, err := control.RegisterProcess(ctx, sock, "c1", "bad identity", os.Getpid(), control.Request{API: true}); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("a bad identity: %v", err)
	}
	a, b := sleeper(t), sleeper(t)
	ra, err := control.RegisterProcess(ctx, sock, "ctr-a", "client", a.Process.Pid, control.Request{API: true})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := control.RegisterProcess(ctx, sock, "ctr-b", "server", b.Process.Pid, control.Request{API: true})
	if err != nil {
		t.Fatal(err)
	}
	dirA, dirB := ra.Dir, rb.Dir
	if id, err := getIdentity(t, filepath.Join(dirA, "api.sock")); err != nil || id != "client" {
		t.Fatalf("container a's socket answers %q, %v", id, err)
	}
	if id, _ := getIdentity(t, filepath.Join(dirB, "api.sock")); id != "server" {
		t.Fatalf("container b's socket answers %q", id)
	}

	// The agent restarts: b's socket comes back in the same directory.
	stop()
	if _, err := getIdentity(t, filepath.Join(dirB, "api.sock")); err == nil {
		t.Fatal("the socket answers while no agent runs")
	}
	runAgent(t, st, sock, auditPath)
	if id, err := getIdentity(t, filepath.Join(dirB, "api.sock")); err != nil || id != "server" {
		t.Fatalf("after an agent restart b's socket answers %q, %v", id, err)
	}

	// a's process ends: its socket and directory go.
	a.Process.Kill()
	a.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(dirA); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the socket directory of a gone container stays")
		}
	}

	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, _ := os.ReadFile(auditPath)
	for _, want := range []string{"container-registered", "container-gone", "lifecycle-started"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	// The key is the store's; Verify with it.
	key, err := st.Key(ctx, registry.AuditKeyName, 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(f, key, nil); err != nil {
		t.Errorf("audit log: %v", err)
	}
}
