//go:build integration && bench

package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// shimBench is rootless containerd with the northstar shim as the shipped
// config and `make demo` run it: the TPM sealer (swtpm, owned by the test
// user, behind a proxy that adds no delay and counts commands), [agent]
// socket set and `northstarctl agent` running in containerd's namespaces,
// so the hook takes the secret from the agent.
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
// `start`, Create with the hook at createRuntime, Start) and until the
// task and container were deleted after the process exited (the shim's
// `delete` included: containerd waits for it).
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
	started := interleaveTimed(t, benchPairs, side(plainRuntime, &deleted.a), side(northstarRuntime, &deleted.b))
	deleted.a, deleted.b = deleted.a[benchWarmup:], deleted.b[benchWarmup:] // the warm-up's
	what := fmt.Sprintf("container start (containerd Go client, rootless containerd %s, agent running) through the northstar shim / the plain runc shim (`%s`)",
		containerdVersion(), plainRuntime)
	reportRatio(what, started, 1.10, served())
	reportRatioOnly("the same pairs, timed from create until the exited container is deleted (the shim's `delete` included)", deleted)
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
