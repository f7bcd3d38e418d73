// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/hook/delivery"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
	"github.com/northstar-oci/northstar/store"
)

func hostStore(t *testing.T) *store.Store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	return store.New(dir, seal.NewHost(filepath.Join(dir, seal.HostKeyFile)))
}

// TestBuildMount: the detached filesystem is built from the store's secret;
// a configured but absent agent, or one serving another secret, changes
// nothing (the hook unseals itself); an empty store fails naming unseal.
func TestBuildMount(t *testing.T) {
	testenv.RequireRoot(t, "mounts, user namespaces")
	ctx := context.Background()
	st := hostStore(t)
	owner := mount.Owner{UID: 1000, GID: 1000, Mode: 0o400}
	if _, err := buildMount(ctx, st, nil, owner, false); err == nil || !strings.HasPrefix(err.Error(), "unseal: ") {
		t.Fatalf("buildMount before init = %v, want an unseal error", err)
	}
	if _, _, err := st.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for name, sock := range map[string]string{
		"no agent configured":          "",
		"agent configured, absent":     filepath.Join(t.TempDir(), "agent", "agent.sock"),
		"agent serving another secret": staleAgent(t),
	} {
		var agent Agent
		if sock != "" {
			agent = SocketAgent(sock)
		}
		m, err := buildMount(ctx, st, agent, owner, false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.FSType == "" {
			t.Errorf("%s: no filesystem type", name)
		}
		m.Close()
	}
}

// staleAgent serves a memfd that is not the store's secret, as an agent of
// an earlier state would.
func staleAgent(t *testing.T) string {
	t.Helper()
	f, err := secretfs.NewSealedMemfd("stale", []byte(strings.Repeat("ab", 32)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		control.Serve(ctx, ln, func() (*os.File, control.RecordID, error) {
			g, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
			return g, control.RecordID{Generation: 1}, err
		}, nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

// TestOwnerAndCreator: ids of a container with its own user namespace are
// translated through its maps; an unmapped id names the annotation that
// fixes it; without a user namespace, or inside the container, ids stay.
func TestOwnerAndCreator(t *testing.T) {
	testenv.RequireRoot(t, "mounts, user namespaces")
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	// Wait for the maps to be written.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid)); strings.Contains(string(data), "300000") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("uid_map never written")
		}
	}
	p := &delivery.Policy{UID: 1000, GID: 1001, Mode: 0o400}
	o, err := ownerFor(pid, p, false)
	if err != nil || o.UID != 301000 || o.GID != 301001 {
		t.Errorf("ownerFor in a user namespace = %+v, %v; want 301000:301001", o, err)
	}
	if o, err := ownerFor(pid, p, true); err != nil || o.UID != 1000 || o.GID != 1001 {
		t.Errorf("ownerFor inside the container = %+v, %v; want the ids as they are", o, err)
	}
	if o, err := ownerFor(os.Getpid(), p, false); err != nil || o.UID != 1000 {
		t.Errorf("ownerFor without a user namespace = %+v, %v", o, err)
	}
	if _, err := ownerFor(pid, &delivery.Policy{UID: 70000, GID: 0, Mode: 0o400}, false); err == nil || !strings.Contains(err.Error(), delivery.AnnotationUID) {
		t.Errorf("ownerFor of an unmapped uid = %v, want an error naming %s", err, delivery.AnnotationUID)
	}
	if c, err := containerRoot(pid, false); err != nil || c == nil || *c != (mount.IDs{UID: 300000, GID: 300000}) {
		t.Errorf("containerRoot = %+v, %v; want 300000:300000", c, err)
	}
	if c, err := containerRoot(os.Getpid(), false); err != nil || c != nil {
		t.Errorf("containerRoot without a user namespace = %+v, %v; want nil", c, err)
	}
}

// TestRegisteredAPI: inside the container the hook opens the directory the
// agent made for it, and nothing else: not through a symlink planted in
// its place, not one of another user, not when the container joins a
// mount namespace it does not own, and it says when none was registered.
func TestRegisteredAPI(t *testing.T) {
	testenv.RequireRoot(t, "open_tree")
	base := t.TempDir()
	sock := filepath.Join(base, "agent", "agent.sock")
	spec := &specs.Spec{}
	// The container's process: this test's parent, as the hook in a
	// container sees its own (runc's init).
	pid := os.Getppid()
	start, err := procstat.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	dirOf := func(id string) string {
		return control.ContainerDir(sock, control.Registration{ID: id, Pid: pid, Start: start})
	}
	try := func(id string) error {
		t.Helper()
		tree, err := registeredAPI(sock, spec, id)
		if tree != nil {
			tree.Close()
		}
		return err
	}
	if err := try("c1"); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("nothing registered: %v", err)
	}
	good := dirOf("c1")
	if err := os.MkdirAll(good, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := try("c1"); err != nil {
		t.Fatalf("the registered directory: %v", err)
	}

	elsewhere := filepath.Join(base, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dirOf("c2")); err != nil {
		t.Fatal(err)
	}
	if err := try("c2"); err == nil || strings.Contains(err.Error(), "not registered") {
		t.Errorf("a symlink in the directory's place: %v", err)
	}
	// One that stays inside the agent directory (RESOLVE_BENEATH alone
	// would follow it).
	if err := os.Symlink(filepath.Base(good), dirOf("c4")); err != nil {
		t.Fatal(err)
	}
	if err := try("c4"); err == nil || strings.Contains(err.Error(), "not registered") {
		t.Errorf("a symlink to another container's directory: %v", err)
	}

	other := dirOf("c3")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	if err := try("c3"); err == nil || !strings.Contains(err.Error(), "belongs to uid 4321, not to the agent directory's owner (uid 0)") {
		t.Errorf("a directory of another user: %v", err)
	}

	spec.Linux = &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace, Path: "/proc/1/ns/mnt"}}}
	if err := try("c1"); err == nil || !strings.Contains(err.Error(), "joins the mount namespace /proc/1/ns/mnt") {
		t.Errorf("a joined mount namespace: %v", err)
	}
}

// TestOptOutsWithTheAPI: with [api] enable, a pod's pause container gets
// nothing (it does not even ask the agent), while a container out of the
// secret alone still needs the agent for its API: with none running, its
// start fails naming the agent.
func TestOptOutsWithTheAPI(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	sock := filepath.Join(dir, "no-agent", "agent.sock")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", filepath.Join(dir, "state"), sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	hookWith := func(annotations string) error {
		t.Helper()
		bundle := t.TempDir()
		spec := `{"ociVersion":"1.2.0","root":{"path":"rootfs"},"annotations":` + annotations + `}`
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
		state := fmt.Sprintf(`{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":%d,"bundle":%q}`, os.Getpid(), bundle)
		return Run(context.Background(), []string{"--config", cfgPath}, strings.NewReader(state))
	}
	if err := hookWith(`{"io.kubernetes.cri.container-type":"sandbox"}`); err != nil {
		t.Errorf("a pod sandbox with the API on: %v, want nothing done", err)
	}
	if err := hookWith(`{"io.northstar.secret.disable":"true","io.northstar.api.disable":"true"}`); err != nil {
		t.Errorf("a container out of both: %v, want nothing done", err)
	}
	if err := hookWith(`{"io.northstar.secret.disable":"true"}`); err == nil || !strings.Contains(err.Error(), "start 'northstarctl agent'") {
		t.Errorf("an API-only container with no agent: %v, want the start refused naming the agent", err)
	}
}
