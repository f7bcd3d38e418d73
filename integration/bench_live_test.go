// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
)

// The rows of DESIGN.md §7 for live rotation: how long after
// `northstarctl rotate` starts every running container reads the new
// secret.

// TestBenchLiveDeliveryStart: what live rotation costs a start. The hook
// served by the agent either way; with [rotation] live (the default) the
// agent builds the container's secret filesystem and registers it, without
// it the hook builds the filesystem from the agent's memfd. Target: 1.05
// (DESIGN.md §12: the start rows unchanged).
func TestBenchLiveDeliveryStart(t *testing.T) {
	requires(t, "runc", "swtpm")
	reportRatio("`runc run` with the hook served by the agent, live delivery ([rotation] live, the default) / live off",
		agentStartPairs(t, newSWTPM(t, nil), "[rotation]\nlive = false\n", ""), 1.05)
}

// agentStartPairs times `runc run` of a container with the hook, served
// by one of two agents on tpm whose configs add aConfig and bConfig, in
// three times the pairs of the other rows: the differences these rows
// seek are about a millisecond of a 35 ms start whose per-pair ratios
// spread over ±0.3, and with 41 pairs the median moved by ±0.08 from run
// to run.
func agentStartPairs(t *testing.T, tpm tpmDevice, aConfig, bConfig string) pairs {
	t.Helper()
	side := func(extra string) func() error {
		e, sock := newAgentTPMEnv(t, tpm, extra)
		startAgent(t, e, sock)
		b := newBundle(t, e.dir, false, "true").withHook("createRuntime", e.config)
		b.write(t)
		return func() error {
			if r := b.runcRun(t); r.err != nil {
				return fmt.Errorf("%s", r)
			}
			return nil
		}
	}
	a, b := side(aConfig), side(bConfig)
	return interleave(t, tightPairs, a, b)
}

// TestBenchLiveRotation100: 100 running runc containers. Target: 1 s.
func TestBenchLiveRotation100(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "5m", "")
	startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-bench-live")
	pids := make([]int, 100)
	var wg sync.WaitGroup
	for i := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config).runDetached(t, root, fmt.Sprintf("b%d", i))
			pids[i] = d.pid(t)
		}()
	}
	wg.Wait()
	read := func(i int) string {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/northstar/secret", pids[i]))
		return string(data)
	}
	took := timeRotation(t, e, len(pids), read)
	report("live rotation reaching 100 running containers (runc), from northstarctl rotate starting until each reads the new secret",
		took.Round(time.Millisecond).String(), "≤ 1 s", took <= time.Second)
}

// TestBenchLiveRotation1000: 1,000 registrations of sleeping processes,
// whose views this test holds and reads as a container would. Target: 5 s.
func TestBenchLiveRotation1000(t *testing.T) {
	requires(t, "sleep")
	e, sock := liveEnv(t, "5m", "")
	startAgent(t, e, sock)
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	views := make([]*os.File, 1000)
	for i := range views {
		r, err := control.RegisterProcess(context.Background(), sock, fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i), sleeper.Process.Pid,
			control.Request{Secret: &control.Owner{Mode: 0o400}})
		if err != nil {
			t.Fatal(err)
		}
		views[i] = r.View
		defer r.View.Close()
	}
	read := func(i int) string {
		fd, err := unix.Openat(int(views[i].Fd()), "secret", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return ""
		}
		f := os.NewFile(uintptr(fd), "secret")
		defer f.Close()
		b := make([]byte, 64)
		n, _ := f.Read(b)
		return string(b[:n])
	}
	took := timeRotation(t, e, len(views), read)
	report("live rotation reaching 1,000 registered containers (sleeping processes, their views read as the containers would)",
		took.Round(time.Millisecond).String(), "≤ 5 s", took <= 5*time.Second)
}

// timeRotation rotates and returns how long from the rotate command's
// start until read(i) gives the new
// secret for every i < n.
func timeRotation(t *testing.T, e *env, n int, read func(i int) string) time.Duration {
	t.Helper()
	old := e.secretHex(t)
	for i := range n {
		if got := read(i); got != old {
			t.Fatalf("container %d reads %q before the rotation, want the current secret", i, got)
		}
	}
	// From the start of the rotate command: its own process start and
	// seal are in the figure, since the agent may deliver before the
	// command has exited.
	t0 := time.Now()
	mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
	want := e.secretHex(t)
	for i := 0; i < n; {
		if read(i) == want {
			i++
			continue
		}
		if time.Since(t0) > 30*time.Second {
			t.Fatalf("container %d still reads the old secret 30 s after the rotation", i)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(t0)
}
