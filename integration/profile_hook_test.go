// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/internal/benchstat"
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

// TestProfileHookExec times the hook process alone, without runc around
// it: exec'd as runc execs it (the OCI state on stdin, the config on its
// command line) for a process in a mount namespace of its own (`unshare
// --mount sleep`, a fresh one each round, its root a directory of the
// host), served by the agent (API on, live rotation), from fork to exit.
// In each round the floor hook (integration/hookfloor) and northstar's
// hook run in turn, and with PROFILE_OTHER_HOOK another build of it (the
// commit before a change): a `runc run` is 60-120 ms on this VM and
// varies by more than the hook costs, the hook alone by much less.
// PROFILE_HOOK puts another build in this tree's place; PROFILE_TPM=1
// runs no agent, so that the hook unseals from swtpm in every start.
func TestProfileHookExec(t *testing.T) {
	requires(t, "swtpm", "unshare")
	var e *env
	if os.Getenv("PROFILE_TPM") != "" {
		// No agent: the hook unseals per start.
		e = newTPMEnv(t, newSWTPM(t, nil), "[]", nil)
	} else {
		var sock string
		e, sock = newAgentTPMEnv(t, newTPMProxy(t, newSWTPM(t, nil), 0), "[api]\nenable = true\n")
		startAgent(t, e, sock)
	}
	floorBin := filepath.Join(bins.dir, "hookfloor")
	if err := buildStatic("..", "./integration/hookfloor", floorBin); err != nil {
		t.Fatal(err)
	}
	hooks := []string{floorBin, bins.hook}
	if h := os.Getenv("PROFILE_HOOK"); h != "" {
		hooks[1] = h // another build in this tree's place
	}
	if other := os.Getenv("PROFILE_OTHER_HOOK"); other != "" {
		hooks = append(hooks, other)
	}
	// Each binary copied the same way first: how a file came into the
	// page cache (the linker's writes, cp's) changed a hook's start by
	// 3-8 % here, more than the changes it was to measure.
	for i, h := range hooks {
		hooks[i] = filepath.Join(e.dir, fmt.Sprintf("hook-%d-%s", i, filepath.Base(h)))
		if err := copyFile(h, hooks[i]); err != nil {
			t.Fatal(err)
		}
	}
	bundle := filepath.Join(e.dir, "exec-bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	n := 0
	type usage struct{ cpu, faults []float64 }
	used := make([]usage, len(hooks))
	runOne := func(hook string) (float64, *syscall.Rusage) {
		n++
		// Each hook its own container: a process in a mount namespace
		// of its own, gone (and unregistered) after it.
		sleeper := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
		// unshare has made the namespace once the process runs sleep.
		for deadline := time.Now().Add(10 * time.Second); ; {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", sleeper.Process.Pid)); strings.HasSuffix(exe, "/sleep") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("unshare did not run sleep in 10 s")
			}
			time.Sleep(time.Millisecond)
		}
		state := fmt.Sprintf(`{"ociVersion":"1.0.2","id":"ns-exec-%d","status":"creating","pid":%d,"bundle":%q}`, n, sleeper.Process.Pid, bundle)
		cmd := exec.Command(hook, "--config", e.config)
		cmd.Stdin = strings.NewReader(state)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := msSince(start)
		if err != nil {
			t.Fatalf("%s: %v\n%s", hook, err, out)
		}
		return took, cmd.ProcessState.SysUsage().(*syscall.Rusage)
	}
	orders := [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}, {1, 0, 2}, {0, 2, 1}}
	times := make([][]float64, len(hooks))
	rounds := 4 * benchPairs
	for i := range benchWarmup + rounds {
		for _, k := range orders[i%len(orders)] {
			if k >= len(hooks) {
				continue
			}
			took, ru := runOne(hooks[k])
			if i >= benchWarmup {
				times[k] = append(times[k], took)
				cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
				used[k].cpu = append(used[k].cpu, float64(cpu.Microseconds())/1000)
				used[k].faults = append(used[k].faults, float64(ru.Minflt))
			}
		}
	}
	for k, h := range hooks[1:] {
		p := pairs{a: times[0], b: times[k+1]}
		t.Logf("%s / the floor hook, exec to exit: %s", h, ratioResult(p))
		t.Logf("%s - the floor hook, exec to exit: %.2f ms (median of the differences)", h, medianDiff(times[k+1], times[0]))
	}
	for k, h := range hooks {
		t.Logf("%s: CPU (user + system) median %.2f ms, IQR %.2f-%.2f; minor faults median %.0f",
			h, benchstat.Percentile(used[k].cpu, 0.5), benchstat.Percentile(used[k].cpu, 0.25), benchstat.Percentile(used[k].cpu, 0.75), benchstat.Percentile(used[k].faults, 0.5))
	}
	if len(hooks) == 3 {
		t.Logf("this tree's hook / %s, CPU: %s", hooks[2], ratioResult(pairs{a: used[2].cpu, b: used[1].cpu}))
		t.Logf("this tree's hook / %s: %s", hooks[2], ratioResult(pairs{a: times[2], b: times[1]}))
	}
}

// medianDiff is the median of b[i] - a[i].
func medianDiff(b, a []float64) float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = b[i] - a[i]
	}
	return benchstat.Percentile(d, 0.5)
}
