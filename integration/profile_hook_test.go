// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestProfileHook runs `runc run` with the hook served by the agent (API
// on, live rotation) under strace: the hook's system calls (strace -f -c,
// and one full trace with -T -tt), and the agent's while it serves the
// registrations (strace -f -c -p). PROFILE_DIR keeps the outputs
// (default: a temporary directory, printed). Not a bench row: strace
// slows every system call down, so the times are for finding where the
// calls go, not for ratios.
func TestProfileHook(t *testing.T) {
	requires(t, "runc", "swtpm", "strace")
	out := os.Getenv("PROFILE_DIR")
	if out == "" {
		out = t.TempDir()
	}
	tpm := newTPMProxy(t, newSWTPM(t, nil), 0)
	e, sock := newAgentTPMEnv(t, tpm, "[api]\nenable = true\n")
	a := startAgent(t, e, sock)
	n := 20
	wrap := func(name string, args ...string) string {
		script := filepath.Join(e.dir, name)
		body := "#!/bin/sh\nexec strace"
		for _, a := range args {
			body += " " + a
		}
		body += " " + bins.hook + " \"$@\"\n"
		if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return script
	}
	run := func(hook string) {
		b := newBundle(t, e.dir, false, "test -S /run/northstar/api/api.sock && cat /run/northstar/secret").withHook("createRuntime", e.config)
		b.spec.Hooks.CreateRuntime[0].Path = hook
		if r := b.runcRun(t); r.err != nil {
			t.Fatalf("%s", r)
		}
	}
	// One full trace with timestamps and times per call, of the hook
	// and of the agent serving it.
	trace := exec.Command("strace", "-f", "-T", "-tt", "-o", filepath.Join(out, "agent.trace"), "-p", strconv.Itoa(a.cmd.Process.Pid))
	if err := trace.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // strace attaches to every thread
	run(wrap("hook-trace", "-f", "-T", "-tt", "-o", filepath.Join(out, "hook.trace")))
	trace.Process.Signal(os.Interrupt)
	trace.Wait()
	// The agent's calls for n registrations, and the hook's count.
	agent := exec.Command("strace", "-f", "-c", "-o", filepath.Join(out, "agent.count"), "-p", strconv.Itoa(a.cmd.Process.Pid))
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // strace attaches to every thread
	for i := range n {
		run(wrap(fmt.Sprintf("hook-count-%d", i), "-f", "-c", "-o", filepath.Join(out, fmt.Sprintf("hook.count.%d", i))))
	}
	agent.Process.Signal(os.Interrupt)
	agent.Wait()
	t.Logf("profiles in %s (%d starts)", out, n)
}

// TestProfileHookAgainst interleaves `runc run` with the hook built from
// this tree and with another build of it (PROFILE_OTHER_HOOK, e.g. the
// commit before a change), both served by one agent (API on, live
// rotation), benchPairs pairs: the before and after of a change to the
// hook, side by side.
func TestProfileHookAgainst(t *testing.T) {
	requires(t, "runc", "swtpm")
	other := os.Getenv("PROFILE_OTHER_HOOK")
	if other == "" {
		t.Skip("PROFILE_OTHER_HOOK names no hook to compare with")
	}
	tpm := newTPMProxy(t, newSWTPM(t, nil), 0)
	e, sock := newAgentTPMEnv(t, tpm, "[api]\nenable = true\n")
	startAgent(t, e, sock)
	bundleWith := func(hook string) *bundle {
		b := newBundle(t, e.dir, false, "true").withHook("createRuntime", e.config)
		b.spec.Hooks.CreateRuntime[0].Path = hook
		b.write(t)
		return b
	}
	then, now := bundleWith(other), bundleWith(bins.hook)
	runc := func(b *bundle) func() error {
		return func() error {
			if r := b.runcRun(t); r.err != nil {
				return fmt.Errorf("%s", r)
			}
			return nil
		}
	}
	p := interleave(t, benchPairs, runc(then), runc(now))
	// Printed here too: this file's tests run after TestBenchZZReport.
	t.Logf("this tree's hook / %s: %s", other, ratioResult(p))
	reportRatioOnly("`runc run`, the hook of this tree / "+other+" (served by the agent, API on)", p)
}
