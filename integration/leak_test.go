// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSecretNeverLeaks runs the hook through a wrapper that records its
// stdout and stderr, keeps a container running, and then looks for the
// secret (hex and raw bytes) in the hook's output, in every process's argv
// and environment on the host, in the bundle and in the state directory.
func TestSecretNeverLeaks(t *testing.T) {
	requires(t, "runc")
	e := newEnv(t, "", nil)
	want := e.secretHex(t)
	raw, _ := hex.DecodeString(want)

	outDir := filepath.Join(e.dir, "hook-output")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(e.dir, "hook-wrapper.sh")
	script := fmt.Sprintf("#!/bin/sh\nn=$$\n%s \"$@\" >%s/out.$n 2>%s/err.$n\nrc=$?\necho $rc >%s/rc.$n\nexit $rc\n", bins.hook, outDir, outDir, outDir)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	b := newBundle(t, e.dir, false, `cat /run/northstar/secret > /tmp/seen; sleep 30`).withHook("createRuntime", e.config)
	b.spec.Hooks.CreateRuntime[0].Path = wrapper
	b.spec.Root.Readonly = false // the container reports through /tmp/seen
	// A failing container too, refused after the hook has unsealed the
	// secret (its /run/northstar is a file): its error output must not
	// leak either.
	bad := newBundle(t, e.dir, false, `true`).withHook("createRuntime", e.config)
	bad.spec.Hooks.CreateRuntime[0].Path = wrapper
	if err := os.MkdirAll(filepath.Join(bad.rootfs, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad.rootfs, "run/northstar"), []byte("a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := bad.runcRun(t); r.err == nil {
		t.Fatalf("bad container started:\n%s", r)
	}
	errs, _ := filepath.Glob(filepath.Join(outDir, "err.*"))
	if len(errs) != 1 {
		t.Fatalf("hook wrapper recorded %d stderr files, want 1", len(errs))
	}
	if data, _ := os.ReadFile(errs[0]); !strings.Contains(string(data), "northstar-hook: mount: ") {
		t.Fatalf("the bad container was refused before the hook unsealed its secret: %q", data)
	}

	b.write(t)
	root := filepath.Join(e.dir, "runc-root")
	id := fmt.Sprintf("ns-leak-%d", os.Getpid())
	t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
	detached := exec.Command("runc", "--root", root, "run", "--detach", "--bundle", b.dir, id)
	// The container inherits stdio: give it files, not pipes we would wait on.
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	detached.Stdin, detached.Stdout, detached.Stderr = devnull, devnull, devnull
	if err := detached.Run(); err != nil {
		t.Fatalf("runc run --detach: %v", err)
	}
	// Wait until the container has read its secret.
	seen := filepath.Join(b.rootfs, "tmp/seen")
	for i := 0; ; i++ {
		if data, _ := os.ReadFile(seen); string(data) == want {
			break
		}
		if i > 100 {
			st, _ := exec.Command("runc", "--root", root, "state", id).CombinedOutput()
			data, err := os.ReadFile(seen)
			t.Fatalf("container never read its secret: %q %v\n%s", data, err, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = os.Remove(seen)

	leaks := func(where string, data []byte) {
		if bytes.Contains(data, []byte(want)) || bytes.Contains(bytes.ToLower(data), []byte(want)) || bytes.Contains(data, raw) {
			t.Errorf("the secret appears in %s", where)
		}
	}
	outputs, _ := filepath.Glob(filepath.Join(outDir, "*"))
	if len(outputs) < 6 {
		t.Fatalf("hook wrapper recorded %d files, want out/err/rc of 2 runs", len(outputs))
	}
	for _, p := range outputs {
		data, _ := os.ReadFile(p)
		leaks("hook output "+filepath.Base(p), data)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, f := range []string{"cmdline", "environ"} {
			data, err := os.ReadFile(filepath.Join(p, f))
			if err == nil {
				leaks(p+"/"+f, data)
			}
		}
	}
	for _, dir := range []string{e.cfg.StateDir, b.dir, root} {
		_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || strings.HasPrefix(p, b.rootfs+"/proc") {
				return nil
			}
			data, _ := os.ReadFile(p)
			leaks(p, data)
			return nil
		})
	}
}

// TestSecretNotInArgvOrEnvWhileHooksRun scans every process's argv and
// environment while a hook is alive: held at the TPM lock by the test, so
// the scan cannot run only after the hooks are gone.
func TestSecretNotInArgvOrEnvWhileHooksRun(t *testing.T) {
	requires(t, "runc", "swtpm")
	e := newTPMEnv(t, newSWTPM(t, nil), "[]", nil)
	want := e.secretHex(t)
	raw, _ := hex.DecodeString(want)

	lock, err := os.OpenFile(e.cfg.TPMLockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	b := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config)
	go func() { done <- b.runcRun(t) }()

	var hooks []string
	for deadline := time.Now().Add(10 * time.Second); len(hooks) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no northstar-hook process showed up")
		}
		procs, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range procs {
			if comm, _ := os.ReadFile(p + "/comm"); strings.TrimSpace(string(comm)) == "northstar-hook" {
				hooks = append(hooks, p)
			}
		}
	}
	scanned := 0
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, f := range []string{"cmdline", "environ"} {
			data, err := os.ReadFile(filepath.Join(p, f))
			if err != nil {
				continue
			}
			scanned++
			if bytes.Contains(data, []byte(want)) || bytes.Contains(data, raw) {
				t.Errorf("the secret appears in %s/%s", p, f)
			}
		}
	}
	for _, h := range hooks {
		if _, err := os.Stat(h); err != nil {
			t.Errorf("hook %s exited before the scan ended: the scan proves nothing", h)
		}
	}
	t.Logf("scanned %d argv/environ files with %d hook(s) blocked", scanned, len(hooks))
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.stdout != want {
		t.Fatalf("container after the lock was released:\n%s", r)
	}
}
