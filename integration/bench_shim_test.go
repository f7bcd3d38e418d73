// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/benchstat"
)

// shimBench is rootless containerd with the northstar shim, the agent run
// as the shipped config runs it (and `make demo`, which also turns the API
// on): the TPM sealer (swtpm, owned by the test user, behind a proxy that
// adds no delay and counts commands), [agent] socket set and `northstarctl
// agent` running in containerd's namespaces with live rotation (the
// default), so the shim hands runc the agent's mounts and no hook runs.
type shimBench struct {
	c      *rootlessContainerd
	e      *env
	tpm    *tpmProxy
	client *containerd.Client
}

func newShimBench(t *testing.T) *shimBench {
	t.Helper()
	a := requiresContainerd(t)
	requires(t, "swtpm")
	tpm := newTPMProxy(t, newSWTPM(t, a), 0)
	sock := agentSocket(t, a)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n", tpm.path(), sock), a)
	c := startContainerd(t, a, "NORTHSTAR_CONFIG="+e.config)
	startAgentIn(t, c, e, sock)
	if got, want := c.readSecret(t, northstarRuntime), e.secretHex(t); got != want {
		t.Fatalf("northstar container read %s, the store holds %s", got, want)
	}
	client, err := containerd.New(filepath.Join(c.dir, "containerd.sock"), containerd.WithDefaultNamespace("bench"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &shimBench{c: c, e: e, tpm: tpm, client: client}
}

// plainRuntime is Debian's own runc shim, which the northstar shim execs.
const plainRuntime = "io.containerd.runc.v2"

// run runs one busybox container of runtime (`sh -c true`) through
// containerd's Go client, no ctr process (whose 35-40 ms start would hide
// what is measured), and returns how long until Start returned (shim
// `start` with the agent's prepare, Create, Start) and until the
// task and container were deleted after the process exited (containerd
// runs the shim's `delete` when the task is deleted).
func (sb *shimBench) run(t *testing.T, runtime string) (started, deleted float64) {
	t.Helper()
	ctx := context.Background()
	id := sb.c.newID("bench-shim")
	t0 := time.Now()
	ctr, err := sb.client.NewContainer(ctx, id,
		containerd.WithRuntime(runtime, nil),
		containerd.WithNewSpec(oci.WithDefaultSpec(), oci.WithRootFSPath(sb.c.rootfs), oci.WithProcessArgs("/bin/sh", "-c", "true"), rootlessNoCgroup))
	if err != nil {
		t.Fatalf("new container: %v", err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("new task (%s): %v", runtime, err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait task (%s): %v", runtime, err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task (%s): %v", runtime, err)
	}
	started = msSince(t0)
	if st := <-exited; st.Error() != nil || st.ExitCode() != 0 {
		t.Fatalf("container (%s) exited %d: %v", runtime, st.ExitCode(), st.Error())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task (%s): %v", runtime, err)
	}
	if err := ctr.Delete(ctx); err != nil {
		t.Fatalf("delete container (%s): %v", runtime, err)
	}
	return started, msSince(t0)
}

// TestBenchShimOverhead: container start under rootless containerd through
// the northstar shim vs Debian's runc shim, which the northstar wrapper
// execs after its start-up work, interleaved per pair, with the agent
// running (see shimBench). The start row is DESIGN.md §7's; the same pairs
// timed until the container is deleted add the wrapper's second exec, for
// `delete`.
func TestBenchShimOverhead(t *testing.T) {
	sb := newShimBench(t)
	served := sb.tpm.servedByAgent()
	var deleted pairs
	side := func(runtime string, to *[]float64) func() float64 {
		return func() float64 {
			s, d := sb.run(t, runtime)
			*to = append(*to, d)
			return s
		}
	}
	started := interleaveTimed(t, tightPairs, side(plainRuntime, &deleted.a), side(northstarRuntime, &deleted.b))
	deleted.a, deleted.b = deleted.a[benchWarmup:], deleted.b[benchWarmup:] // the warm-up's
	what := fmt.Sprintf("container start (containerd Go client, rootless containerd %s, agent running) through the northstar shim / the plain runc shim (`%s`)",
		containerdVersion(), plainRuntime)
	reportRatio(what, started, 1.05, served())
	reportRatioOnly("the same pairs, timed from create until the exited container is deleted (the shim's `delete` included)", deleted)
}

// TestBenchShimPhases: where the time of a container started through the
// shim goes, process by process, from the scheduler's tracepoints (see
// procTrace) recorded system-wide while benchPairs containers of each
// runtime run one after the other, with the agent (see shimBench):
//
//   - the wrapper's `start` and `delete`: from its exec to its exec of the
//     runc shim, next to the floor of any Go program that execs another
//     (integration/execfloor execing the same runc shim, for -v);
//   - the hook: none runs (the agent's mounts); counted, to show it;
//   - the runc shim's own `start` and `delete` processes (exec to exit),
//     after the wrapper and when containerd runs them itself.
//
// Reported, no targets: the shim row's target is the ratio above. To
// reproduce: go test -tags 'integration bench' -run 'TestBenchShimPhases|TestBenchZZReport' -v ./integration/
func TestBenchShimPhases(t *testing.T) {
	requires(t, "perf")
	sb := newShimBench(t)
	floor := filepath.Join(bins.dir, "execfloor")
	if err := buildStatic("..", "./integration/execfloor", floor); err != nil {
		t.Fatal(err)
	}
	runcShimPath, err := exec.LookPath("containerd-shim-runc-v2")
	if err != nil {
		t.Fatal(err)
	}
	for range benchWarmup {
		sb.run(t, plainRuntime)
		sb.run(t, northstarRuntime)
	}
	perf := startPerfSched(t)
	for range benchPairs {
		sb.run(t, plainRuntime)
		sb.run(t, northstarRuntime)
		mustRun(t, exec.Command(floor, runcShimPath, "-v"))
	}
	pt := perf.stop(t)

	const wrapper, runcShim, hook = "containerd-shim-northstar-v2", "containerd-shim-runc-v2", "northstar-hook"
	ctd, self := sb.c.pid(t), os.Getpid()
	var ph struct{ wrapStart, wrapDelete, floor, hook, runcStartWrapped, runcStart, runcDeleteWrapped, runcDelete []float64 }
	span := func(from, to float64) float64 { return (to - from) * 1000 } // ms
	for pid, e := range pt.execs {
		names := strings.Join(pt.execsOf(pid), " ")
		end, exited := pt.exit[pid]
		// A shim's `start` forks the shim daemon (an exec of the runc
		// shim); its `delete` forks only runc.
		isStart := false
		for _, c := range pt.children(pid) {
			if k := pt.execsOf(c); len(k) > 0 && k[0] == runcShim {
				isStart = true
			}
		}
		switch {
		case names == wrapper+" "+runcShim && pt.descends(pid, ctd) && exited:
			if isStart {
				ph.wrapStart = append(ph.wrapStart, span(e[0].at, e[1].at))
				ph.runcStartWrapped = append(ph.runcStartWrapped, span(e[1].at, end))
			} else {
				ph.wrapDelete = append(ph.wrapDelete, span(e[0].at, e[1].at))
				ph.runcDeleteWrapped = append(ph.runcDeleteWrapped, span(e[1].at, end))
			}
		case names == runcShim && pt.parent[pid] == ctd && exited:
			if isStart {
				ph.runcStart = append(ph.runcStart, span(e[0].at, end))
			} else {
				ph.runcDelete = append(ph.runcDelete, span(e[0].at, end))
			}
		case names == hook && pt.descends(pid, ctd) && exited:
			ph.hook = append(ph.hook, span(e[0].at, end))
		case names == "execfloor "+runcShim && pt.descends(pid, self):
			ph.floor = append(ph.floor, span(e[0].at, e[1].at))
		}
	}
	if len(ph.hook) != 0 {
		t.Errorf("perf saw %d hook processes, want none (the shim hands runc the agent's mounts)", len(ph.hook))
	}
	for name, d := range map[string][]float64{"wrapper start": ph.wrapStart, "wrapper delete": ph.wrapDelete,
		"runc shim start": ph.runcStart, "runc shim delete": ph.runcDelete, "floor": ph.floor} {
		if len(d) < benchPairs {
			t.Errorf("perf saw %d processes of the %s, want %d", len(d), name, benchPairs)
		}
	}
	phase := func(d []float64) string {
		s := benchstat.Summarize(d)
		return fmt.Sprintf("**%s** (IQR %s–%s, %d processes)", ms(s.Median), ms(s.P25), ms(s.P75), s.N)
	}
	reportOnly("shim path, per phase (median): the northstar wrapper's `start`, from its exec to its exec of the runc shim (the agent's prepare included)", phase(ph.wrapStart))
	reportOnly("shim path: the northstar wrapper's `delete`, from its exec to its exec of the runc shim", phase(ph.wrapDelete))
	reportOnly("shim path: the floor of both, a static Go main that only execs the runc shim (`integration/execfloor containerd-shim-runc-v2 -v`)", phase(ph.floor))
	reportOnly("shim path: hook processes (none: runc mounts what the agent prepared at the wrapper's `start`)", fmt.Sprint(len(ph.hook)))
	reportOnly("shim path: the runc shim's `start` process, after the wrapper / run by containerd", phase(ph.runcStartWrapped)+" / "+phase(ph.runcStart))
	reportOnly("shim path: the runc shim's `delete` process, after the wrapper / run by containerd", phase(ph.runcDeleteWrapped)+" / "+phase(ph.runcDelete))
}

// perfSched is `perf record` of the sched_process_{fork,exec,exit}
// tracepoints on every CPU.
type perfSched struct {
	cmd  *exec.Cmd
	data string
}

func startPerfSched(t *testing.T) *perfSched {
	t.Helper()
	dir := t.TempDir()
	p := &perfSched{data: filepath.Join(dir, "perf.data")}
	// Recording starts disabled and is enabled through perf's control
	// fifo, which acknowledges once the events are on: no start-up race.
	ctl, ack := filepath.Join(dir, "ctl"), filepath.Join(dir, "ack")
	for _, f := range []string{ctl, ack} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd = exec.Command("perf", "record", "-q", "-a", "-o", p.data, "--delay=-1", "--control=fifo:"+ctl+","+ack,
		"-e", "sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit")
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("perf record: %v", err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	// O_RDWR: opening a fifo so never blocks, whether or not perf has
	// opened its end yet.
	c, err := os.OpenFile(ctl, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := os.OpenFile(ack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := c.WriteString("enable\n"); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 16)
	if n, err := a.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "ack") {
		t.Fatalf("perf record did not acknowledge enabling its events: %q, %v", buf[:n], err)
	}
	return p
}

// stop ends the recording and parses it.
func (p *perfSched) stop(t *testing.T) *procTrace {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	// perf writes its data, then dies of the SIGINT it got.
	if err := p.cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
			t.Fatalf("perf record: %v", err)
		}
	}
	out, err := exec.Command("perf", "script", "-i", p.data, "-F", "pid,tid,time,event,trace").Output()
	if err != nil {
		t.Fatalf("perf script: %v", err)
	}
	pt, err := parsePerfSched(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("perf script: %v", err)
	}
	return pt
}

// rootlessNoCgroup: on this cgroup v1 host an unprivileged containerd can
// set neither a cgroup path nor resources (ctr: --cgroup "" --cpu-shares 0).
func rootlessNoCgroup(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Linux.CgroupsPath = ""
	s.Linux.Resources = nil
	return nil
}

// containerdVersion is the version of the containerd on PATH, e.g. 1.6.20.
func containerdVersion() string {
	out, _ := exec.Command("containerd", "--version").Output()
	f := strings.Fields(string(out))
	if len(f) >= 3 {
		return strings.TrimSuffix(f[2], "~ds1")
	}
	return "?"
}

// TestBenchShimAgainst interleaves container starts through the shim of
// this tree and through another build of it (SHIM_OTHER: its path, with
// the northstar-hook of the same build beside it, e.g. the commit before
// a change), both under one rootless containerd with one agent (see
// shimBench), benchPairs pairs: the before and after of a change to the
// shim, side by side. The other build runs as a runtime given by path.
func TestBenchShimAgainst(t *testing.T) {
	other := os.Getenv("SHIM_OTHER")
	if other == "" {
		t.Skip("SHIM_OTHER names no shim to compare with")
	}
	sb := newShimBench(t)
	side := func(runtime string) func() float64 {
		return func() float64 {
			s, _ := sb.run(t, runtime)
			return s
		}
	}
	p := interleaveTimed(t, benchPairs, side(other), side(northstarRuntime))
	// Printed here too: this file's tests run after TestBenchZZReport.
	t.Logf("container start, the shim of this tree / %s: %s", other, ratioResult(p))
	reportRatioOnly("container start (rootless containerd, agent running), the shim of this tree / "+other, p)
}
