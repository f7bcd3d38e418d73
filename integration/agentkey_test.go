// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/registry"
)

// TestAgentRootKeyPlacement: the root key unsealed from the TPM is
// on the agent's key page and nowhere else in its memory after start, on
// the page after serving API containers, and in no file under the state
// dir (raw, hex or base64).
func TestAgentRootKeyPlacement(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e, sock := newAgentTPMEnv(t, tpm, "[api]\nenable = true\n")
	a := startAgent(t, e, sock)
	cfg, st := e.cfg, e.store(t)
	key, err := st.Key(context.Background(), registry.RootKeyName, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer clear(key)
	// scan returns where the agent's memory holds the key: on the one
	// 4 KiB mapping lockedPage made, or elsewhere.
	scan := func() (onPage int, heap []string) {
		t.Helper()
		runtime.GC()
		_, copies := scanMemory(t, a.cmd.Process.Pid, [][]byte{key}, "")
		for _, c := range copies {
			var n int
			var lo, hi uint64
			if _, err := fmt.Sscanf(c, "%d in %x-%x", &n, &lo, &hi); err == nil && hi-lo == uint64(os.Getpagesize()) && n == 1 {
				onPage++
			} else {
				heap = append(heap, c)
			}
		}
		return onPage, heap
	}
	// Loaded by the agent's key child straight onto the page: one copy.
	// (Unsealed in the agent itself, go-tpm's buffers left 4 on its heap.)
	if onPage, heap := scan(); onPage != 1 || len(heap) != 0 {
		t.Errorf("after start the agent holds the root key on %d key pages and elsewhere %v; want its page alone", onPage, heap)
	}

	for _, id := range []string{"client", "server"} {
		if got := in(t, e, id, "nsapi token server mqtt >/dev/null; nsapi derive server mqtt >/dev/null; nsapi sign x >/dev/null; nsapi identity"); !strings.HasPrefix(got, id+" ") {
			t.Fatalf("identity %q, want %s", got, id)
		}
	}
	onPage, heap := scan()
	if onPage != 1 {
		t.Errorf("after API use the root key is on %d key pages", onPage)
	}
	// Known limit, measured not asserted: each derivation's SHA-256 state
	// inside crypto/hkdf is garbage holding the key until the heap reuses
	// it (6 copies after two API containers here). Avoiding it would take
	// an HMAC of our own on the locked page.
	t.Logf("root key copies on the agent's heap after API use: %v", heap)

	// In no file: the state dir holds sealed blobs and the audit log only.
	needles := [][]byte{key, []byte(hex.EncodeToString(key)), []byte(base64.StdEncoding.EncodeToString(key))}
	err = filepath.WalkDir(cfg.StateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s holds the root key", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAgentSecretsNeverLeak extends the leak test to the agent: its root
// and audit keys, client's signing key, the generation's token key, a
// token and a derived key appear in no
// process's argv or environment (scanned while the agent's unseal child is
// held at the TPM lock, and again after API use), in no file under the
// state and agent directories, and not in the agent's output.
func TestAgentSecretsNeverLeak(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e, sock := newAgentTPMEnv(t, tpm, "[api]\nenable = true\n")
	cfg, st := e.cfg, e.store(t)
	// Made here, before the agent starts, so they are known to the test.
	var known [][]byte
	for _, name := range []string{registry.RootKeyName, registry.AuditKeyName} {
		k, err := st.Key(context.Background(), name, 32)
		if err != nil {
			t.Fatal(err)
		}
		defer clear(k)
		known = append(known, k)
	}
	secret, _ := hex.DecodeString(e.secretHex(t))
	// And what the agent derives from the root key: client's signing key
	// and the token key of the generation in force.
	root, err := keys.LoadRoot(func(dst []byte) error { copy(dst, known[0]); return nil })
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	known = append(known, root.Ed25519("client", rec.Generation).Seed(), root.TokenKey(rec.Generation))
	root.Zero()
	needles := func(extra ...[]byte) [][]byte {
		var out [][]byte
		for _, k := range append(append(known, secret), extra...) {
			out = append(out, k, []byte(hex.EncodeToString(k)), []byte(base64.StdEncoding.EncodeToString(k)), []byte(base64.RawURLEncoding.EncodeToString(k)))
		}
		return out
	}
	leaks := func(where string, data []byte, ns [][]byte) {
		t.Helper()
		for _, n := range ns {
			if bytes.Contains(data, n) {
				t.Errorf("%s holds a key of the agent's, the secret or a token (%d bytes)", where, len(n))
				return
			}
		}
	}
	scanProcs := func(ns [][]byte) (scanned int) {
		t.Helper()
		procs, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range procs {
			for _, f := range []string{"cmdline", "environ"} {
				if data, err := os.ReadFile(filepath.Join(p, f)); err == nil {
					scanned++
					leaks(p+"/"+f, data, ns)
				}
			}
		}
		return scanned
	}

	// Hold the TPM lock: the agent's unseal child waits at it, alive while
	// every argv and environment is scanned.
	lock, err := os.OpenFile(cfg.TPMLockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	a := launchAgent(t, exec.Command(bins.ctl, "agent", "--config", e.config), sock)
	child := waitUnsealChild(t, a)
	n := scanProcs(needles())
	if _, err := os.Stat(child); err != nil {
		t.Fatalf("the unseal child %s exited before the scan ended: the scan proves nothing", child)
	}
	t.Logf("scanned %d argv/environ files with the unseal child %s blocked", n, child)
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	a.waitGeneration(t, 0)

	// API use: a token (verified), a signature, a derived key.
	tok := in(t, e, "client", "nsapi token server mqtt")
	if got := in(t, e, "server", "nsapi verify "+tok+" client mqtt"); got != "valid" {
		t.Fatalf("verify: %q", got)
	}
	in(t, e, "client", "nsapi sign hello")
	derived, _ := hex.DecodeString(in(t, e, "client", "nsapi derive server mqtt"))
	if len(derived) != 32 {
		t.Fatal("derive did not answer a key")
	}
	all := append(needles(derived), []byte(tok))

	scanProcs(all)
	if err := a.stop(t); err != nil {
		t.Logf("agent exit: %v", err)
	}
	leaks("the agent's output", a.out.Bytes(), all)
	for _, dir := range []string{cfg.StateDir, filepath.Dir(sock)} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			leaks(path, data, all)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(filepath.Join(cfg.StateDir, "audit.log"))
	for _, ev := range []string{"token-issued", "token-verified", "sign", "derive"} {
		if err != nil || !bytes.Contains(data, []byte(`"event":"`+ev+`"`)) {
			t.Errorf("the audit log this test scanned has no %s line (%v): the scan proves less than it says", ev, err)
		}
	}
}

// TestAgentChildrenNotDumpable: the agent's unseal child, which holds the
// plaintext for a moment, is not dumpable: no core dump of it, and no
// process of its user (a rootless agent's user is also its containers')
// can ptrace it or read its memory. The kernel shows it by giving a
// non-dumpable process's /proc files to root: so the agent runs here as
// the unprivileged test user, its child held at the TPM lock.
func TestAgentChildrenNotDumpable(t *testing.T) {
	requires(t, "swtpm")
	u := unprivileged(t)
	tpm := newSWTPM(t, u)
	sock := agentSocket(t, u)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n", tpm.path(), sock), u)
	lock, err := os.OpenFile(e.cfg.TPMLockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.ctl, "agent", "--config", e.config)
	u.apply(cmd)
	a := launchAgent(t, cmd, sock)
	child := waitUnsealChild(t, a)
	// Held at the lock, past the point where it hardens itself.
	time.Sleep(200 * time.Millisecond)
	var st unix.Stat_t
	if err := unix.Stat(child+"/status", &st); err != nil {
		t.Fatalf("the unseal child %s exited: %v", child, err)
	}
	var parent unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid), &parent); err != nil {
		t.Fatal(err)
	}
	t.Logf("unseal child %s: /proc owned by uid %d; the agent's by uid %d (running as %s, uid %d)", child, st.Uid, parent.Uid, u.name, u.uid)
	if st.Uid != 0 || parent.Uid != 0 {
		t.Errorf("the agent (uid %d) or its unseal child (uid %d) is dumpable: its /proc files are its user's", parent.Uid, st.Uid)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	waitSocket(t, sock, 10*time.Second, func() string { return "the agent did not start after the lock was released:\n" + a.out.String() })
}

// waitUnsealChild waits (at most 10 s) for the unseal child of agent a
// and returns its /proc directory.
func waitUnsealChild(t *testing.T, a *agentProc) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		procs, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range procs {
			if cmd, _ := os.ReadFile(p + "/cmdline"); bytes.Contains(cmd, []byte("--unseal-to-fd")) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no unseal child showed up; agent output:\n%s", a.out)
		}
	}
}
