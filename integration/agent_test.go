// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/internal/testmounts"
)

// agentSocket returns an agent socket path in a short temporary directory
// of its own (sun_path holds 107 bytes, too few for t.TempDir), removed at
// cleanup. With a non-nil a, the directory belongs to that account, whose
// agent makes the socket's directory in it.
func agentSocket(t *testing.T, a *account) string {
	t.Helper()
	base, err := os.MkdirTemp("", "ns-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The containers' API filesystems outlive the agent (for the
		// next one); the test's are taken down with it.
		testmounts.UnmountUnder(base)
		os.RemoveAll(base)
	})
	if a != nil {
		if err := os.Chown(base, int(a.uid), int(a.gid)); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(base, "agent", "agent.sock")
}

// newAgentTPMEnv is newTPMEnv (no PCRs) with [agent] socket set, and the
// extra config tables appended.
func newAgentTPMEnv(t *testing.T, tpm tpmDevice, extra ...string) (*env, string) {
	t.Helper()
	sock := agentSocket(t, nil)
	return newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n", tpm.path(), sock)+strings.Join(extra, ""), nil), sock
}

// agentProc is a running `northstarctl agent`.
type agentProc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	sock string
	done chan error
}

// startAgent runs `northstarctl agent` in the background (killed in the
// test's cleanup) and waits until it serves.
func startAgent(t *testing.T, e *env, sock string) *agentProc {
	t.Helper()
	return startAgentCmd(t, exec.Command(bins.ctl, "agent", "--config", e.config), sock)
}

// startAgentCmd is startAgent for an agent started by cmd.
func startAgentCmd(t *testing.T, cmd *exec.Cmd, sock string) *agentProc {
	t.Helper()
	a := launchAgent(t, cmd, sock)
	a.waitGeneration(t, 0)
	return a
}

// startAgentAs is startAgent with the agent run by account u. It waits for
// the socket to appear: the agent would (rightly) not be trusted by a
// client of another uid, so this test cannot fetch from it.
func startAgentAs(t *testing.T, u *account, e *env, sock string) *agentProc {
	t.Helper()
	cmd := exec.Command(bins.ctl, "agent", "--config", e.config)
	u.apply(cmd)
	a := launchAgent(t, cmd, sock)
	waitSocket(t, sock, 10*time.Second, func() string { return "the agent did not start; its output:\n" + a.out.String() })
	return a
}

// waitSocket waits until sock exists, failing the test with why() after
// timeout.
func waitSocket(t *testing.T, sock string, timeout time.Duration, why func() string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(why())
		}
	}
}

func launchAgent(t *testing.T, cmd *exec.Cmd, sock string) *agentProc {
	t.Helper()
	a := &agentProc{out: new(bytes.Buffer), sock: sock, done: make(chan error, 1), cmd: cmd}
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	go func() { a.done <- a.cmd.Wait() }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// waitGeneration waits until the agent serves gen (any generation for 0).
func (a *agentProc) waitGeneration(t *testing.T, gen uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, got, err := control.Fetch(context.Background(), a.sock)
		if err == nil {
			f.Close()
			if gen == 0 || got.Generation == gen {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never served generation %d (last: %d, %v); its output:\n%s", gen, got.Generation, err, a.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the agent to exit.
func (a *agentProc) stop(t *testing.T) error {
	if a.cmd.ProcessState != nil || a.cmd.Process == nil {
		return nil
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		a.done <- err
		return err
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		t.Errorf("agent ignored SIGTERM; its output:\n%s", a.out)
		return <-a.done
	}
}

// TestAgentTakesTPMOffHotPath: with [agent] socket set and the agent
// running, containers get the secret with the TPM stopped; a rotation
// reaches the agent; without the agent the hook falls back to the TPM and,
// the TPM being down, fails closed naming it.
func TestAgentTakesTPMOffHotPath(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e, sock := newAgentTPMEnv(t, tpm)
	a := startAgent(t, e, sock)

	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("agent directory %s: %v, %v", filepath.Dir(sock), fi.Mode(), err)
	}
	read := func() result {
		t.Helper()
		return newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	}
	first := e.secretHex(t)
	if r := read(); r.err != nil || r.stdout != first {
		t.Fatalf("container did not read the secret with the agent running:\n%s", r)
	}

	// Rotation needs the TPM; the agent picks the new generation up within
	// about a second, and until then the hook unseals itself.
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	second := e.secretHex(t)
	if r := read(); r.err != nil || r.stdout != second {
		t.Fatalf("container right after rotate did not read the new secret:\n%s", r)
	}
	a.waitGeneration(t, 2)

	tpm.stop()
	for i := 0; i < 2; i++ {
		if r := read(); r.err != nil || r.stdout != second {
			t.Fatalf("container with the TPM stopped did not get the secret from the agent:\n%s\nagent output:\n%s", r, a.out)
		}
	}

	if err := a.stop(t); err != nil {
		t.Errorf("agent exit on SIGTERM: %v\n%s", err, a.out)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("agent left its socket behind: %v", err)
	}
	for _, s := range []string{first, second} {
		if strings.Contains(a.out.String(), s) {
			t.Error("agent output shows the secret")
		}
	}
	r := newBundle(t, e.dir, false, "echo started").withHook("createRuntime", e.config).runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "started") {
		t.Fatalf("container started without agent and TPM:\n%s", r)
	}
	if !strings.Contains(r.stderr, "northstar-hook: unseal: tpm: open "+tpm.path()) {
		t.Errorf("fallback error does not name the TPM:\n%s", r)
	}
}

// TestAgentStaleGenerationIgnored: an agent that cannot unseal a rotated
// secret keeps serving the old generation, and the hook ignores it.
func TestAgentStaleGenerationIgnored(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e, sock := newAgentTPMEnv(t, tpm)
	a := startAgent(t, e, sock)
	a.waitGeneration(t, 1)
	first := e.secretHex(t)

	// A second config on another swtpm shares the state directory: the
	// rotation it writes can be unsealed only with that other TPM, so the
	// agent (on the first TPM) stays at generation 1.
	other := newSWTPM(t, nil)
	cfg2 := filepath.Join(e.dir, "config2.toml")
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg2, bytes.Replace(data, []byte(tpm.path()), []byte(other.path()), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	// A plain rotate refuses: the other TPM's SRK is not the one the
	// secret was sealed under (it could be anything posing as the TPM).
	r := run(t, exec.Command(bins.ctl, "rotate", "--config", cfg2))
	if r.err == nil || !strings.Contains(r.stderr, "storage root key is not the one the secret was sealed under") || !strings.Contains(r.stderr, "northstarctl rotate --new-srk") {
		t.Fatalf("rotate onto another TPM's SRK was not refused with the way out:\n%s", r)
	}
	if r := run(t, exec.Command(bins.ctl, "rotate", "--new-srk", "--config", cfg2)); r.err != nil {
		t.Fatalf("rotate --new-srk on the other TPM:\n%s", r)
	}
	time.Sleep(1500 * time.Millisecond)
	f, gen, err := control.Fetch(context.Background(), sock)
	if err != nil {
		t.Fatalf("agent: %v\n%s", err, a.out)
	}
	f.Close()
	if gen.Generation != 1 {
		t.Fatalf("agent serves generation %d, want the stale 1", gen.Generation)
	}
	// The hook must not use the stale secret: it unseals generation 2 with
	// the first TPM, which fails, and says so.
	r = newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, first) {
		t.Fatalf("container got the stale secret from the agent:\n%s", r)
	}
	if !strings.Contains(r.stderr, "northstar-hook: unseal:") {
		t.Errorf("error does not come from the TPM fallback:\n%s", r)
	}
}

// TestAgentMemoryHoldsOneCopy: the agent holds the plaintext for a whole
// lifecycle, so it must hold it once: in its sealed, mlocked memfd. Its
// anonymous memory (Go heap, stacks) must hold neither the raw secret nor
// its hex form, before and after a rotation (go-tpm's unseal leaves
// decrypted buffers behind in the heap of whoever calls it). It is not
// dumpable (no core dumps, no ptrace by its own uid).
func TestAgentMemoryHoldsOneCopy(t *testing.T) {
	requires(t, "swtpm")
	tpm := newSWTPM(t, nil)
	e, sock := newAgentTPMEnv(t, tpm)
	a := startAgent(t, e, sock)
	check := func() {
		t.Helper()
		hexText := e.secretHex(t)
		raw, err := hex.DecodeString(hexText)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC() // our own copies are not the agent's
		pid := a.cmd.Process.Pid
		inMemfd, elsewhere := scanMemory(t, pid, [][]byte{raw, []byte(hexText)}, "memfd:northstar-agent")
		if inMemfd == 0 {
			t.Errorf("the secret is not in the agent's memfd mapping (test premise)")
		}
		if len(elsewhere) > 0 {
			t.Errorf("the agent's memory holds %d copies of the secret outside its memfd: %v", len(elsewhere), elsewhere)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "\nVmLck:") || strings.Contains(string(status), "\nVmLck:\t       0 kB") {
			t.Errorf("the agent has nothing mlocked:\n%s", status)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/mem", pid), &st); err != nil || st.Uid != 0 {
			t.Errorf("/proc/%d/mem owned by uid %d (%v): the agent is dumpable", pid, st.Uid, err)
		}
	}
	check()
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	a.waitGeneration(t, 2)
	check()
}

// scanMemory counts the needles in the readable mappings of pid: those of
// the mapping whose path contains keep, and where else they are (address
// ranges and mapping names).
func scanMemory(t *testing.T, pid int, needles [][]byte, keep string) (inKeep int, elsewhere []string) {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, l := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[1][0] != 'r' {
			continue
		}
		name := ""
		if len(f) >= 6 {
			name = strings.Join(f[5:], " ")
		}
		if strings.HasPrefix(name, "[v") { // [vvar], [vdso], [vsyscall]
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err != nil {
			continue
		}
		buf := make([]byte, hi-lo)
		n, _ := mem.ReadAt(buf, int64(lo))
		for _, needle := range needles {
			c := bytes.Count(buf[:n], needle)
			if c == 0 {
				continue
			}
			if keep != "" && strings.Contains(name, keep) {
				inKeep += c
			} else {
				elsewhere = append(elsewhere, fmt.Sprintf("%d in %s %s", c, f[0], name))
			}
		}
	}
	return inKeep, elsewhere
}

// registeredDirs returns the API directories the agent at sock has
// registered for container id (one per registration: ids repeat across
// runtimes), read from the registry it saves for its restarts.
func registeredDirs(t *testing.T, sock, id string) []string {
	t.Helper()
	saved, err := registry.ReadSaved(sock)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range saved.Containers {
		if e.ID == id && e.API {
			dirs = append(dirs, control.ContainerDir(sock, e.Registration))
		}
	}
	return dirs
}

// registeredDir is the one API directory of container id.
func registeredDir(t *testing.T, sock, id string) string {
	t.Helper()
	dirs := registeredDirs(t, sock, id)
	if len(dirs) != 1 {
		t.Fatalf("container %s has %d registrations with the agent, want 1", id, len(dirs))
	}
	return dirs[0]
}
