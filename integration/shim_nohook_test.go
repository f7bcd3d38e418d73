// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/agent/measure"
	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/client"
	"github.com/northstar-oci/northstar/hook/entry"
)

// shimAgent is rootless containerd (Debian's 1.6) with the northstar
// shim and the agent in its namespaces, live rotation on (the default)
// and the API: the shim hands runc the agent's mounts, no hook runs.
type shimAgent struct {
	a    *account
	e    *env
	c    *rootlessContainerd
	sock string
}

func newShimAgent(t *testing.T, extra string, containerdEnv ...string) *shimAgent {
	t.Helper()
	a := requiresContainerd(t)
	sock := agentSocket(t, a)
	e := newEnv(t, fmt.Sprintf("[agent]\nsocket = %q\n[api]\nenable = true\n%s", sock, extra), a)
	c := startContainerd(t, a, append([]string{"NORTHSTAR_CONFIG=" + e.config}, containerdEnv...)...)
	for _, helper := range []func() (string, error){nsapiBinary} {
		bin, err := helper()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(c.rootfs, "bin", filepath.Base(bin))
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
		a.chownR(t, dst)
	}
	startAgentIn(t, c, e, sock)
	return &shimAgent{a: a, e: e, c: c, sock: sock}
}

// run runs `ctr run` of a busybox container of the northstar runtime
// (flags before the rootfs) running script.
func (s *shimAgent) run(t *testing.T, id string, detach bool, flags []string, script string) result {
	t.Helper()
	args := []string{"run"}
	if detach {
		args = append(args, "-d", "--null-io")
	} else {
		args = append(args, "--rm")
	}
	args = append(append(args, ctrRunFlags...), flags...)
	args = append(args, "--runtime", northstarRuntime, "--rootfs", s.c.rootfs, id, "/bin/sh", "-c", script)
	return s.c.ctr(t, args...)
}

// ctl runs northstarctl as the runtime's user in its namespaces, where
// the agent runs (the state directory is that user's).
func (s *shimAgent) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, exec.Command(s.c.script, append([]string{"exec", s.c.dir, bins.ctl}, append(args, "--config", s.e.config)...)...))
}

// taskPid is the pid of container id's task.
func (s *shimAgent) taskPid(t *testing.T, id string) int {
	t.Helper()
	for _, l := range strings.Split(mustCtr(t, s.c, "task", "ls").stdout, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
	}
	t.Fatalf("no task %s", id)
	return 0
}

// remove kills and deletes container id.
func (s *shimAgent) remove(t *testing.T, id string) {
	t.Helper()
	s.c.ctr(t, "task", "kill", "--signal", "SIGKILL", id)
	for deadline := time.Now().Add(10 * time.Second); s.c.ctr(t, "task", "delete", id).err != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("task %s not deleted", id)
		}
	}
	mustCtr(t, s.c, "container", "delete", id)
}

// checkNoHook fails unless container id's config.json runs no northstar
// hook and bind-mounts /run/northstar and (with api) /run/northstar/api
// read-only, nosuid, nodev, noexec.
func checkNoHook(t *testing.T, spec *specs.Spec, api bool) {
	t.Helper()
	if h := spec.Hooks; h != nil {
		for _, stage := range [][]specs.Hook{h.Prestart, h.CreateRuntime, h.CreateContainer, h.StartContainer, h.Poststart, h.Poststop} { //nolint:staticcheck
			for _, x := range stage {
				if entry.IsNorthstar(x) {
					t.Fatalf("config.json runs the northstar hook %s; want the agent's mounts", x.Path)
				}
			}
		}
	}
	found := 0
	for _, m := range spec.Mounts {
		if m.Destination != "/run/northstar" && m.Destination != "/run/northstar/api" {
			continue
		}
		found++
		opts := "," + strings.Join(m.Options, ",") + ","
		for _, want := range []string{"ro", "nosuid", "nodev", "noexec", "rprivate"} {
			if !strings.Contains(opts, ","+want+",") {
				t.Errorf("the mount at %s has options %v, want %s", m.Destination, m.Options, want)
			}
		}
	}
	if want := map[bool]int{false: 1, true: 2}[api]; found != want {
		t.Errorf("config.json has %d northstar mounts, want %d", found, want)
	}
}

// TestShimMountsNoHook: through the shim with the agent running, no
// process of northstar's runs on a container's start path: config.json
// has no hook, the agent's secret filesystem and API directory are bind
// mounts runc made. The container reads its secret, speaks as its
// identity (also when its first request races the start), follows a
// rotation, is cut off by a revocation, and leaves nothing on the host
// when it goes.
func TestShimMountsNoHook(t *testing.T) {
	s := newShimAgent(t, "")
	c, e := s.c, s.e
	app, bad := c.newID("app"), c.newID("bad")
	s.run(t, app, true, []string{"--annotation", "io.northstar.identity=app"}, "sleep 600")
	s.run(t, bad, true, []string{"--annotation", "io.northstar.identity=bad"}, "sleep 600")
	checkNoHook(t, c.bundleSpec(t, app), true)
	appPid, badPid := s.taskPid(t, app), s.taskPid(t, bad)
	if got, want := secretOf(t, appPid), e.secretHex(t); got != want {
		t.Fatalf("the container read %q, want the store's %s", got, want)
	}
	if r := c.ctr(t, "task", "exec", "--exec-id", "id1", app, "/bin/nsapi", "identity"); r.err != nil || !strings.HasPrefix(r.stdout, "app ") {
		t.Errorf("the container's API identity:\n%s", r)
	}
	// Its first request as it starts: held until the agent bound it.
	for i := range 3 {
		r := s.run(t, c.newID("quick"), false, []string{"--annotation", "io.northstar.identity=quick"}, "nsapi identity && cat /run/northstar/secret")
		if r.err != nil || !strings.HasPrefix(r.stdout, "quick ") || !strings.Contains(r.stdout, e.secretHex(t)) {
			t.Errorf("start %d, asking its API at once:\n%s", i, r)
		}
	}
	if r := c.ctr(t, "task", "exec", "--exec-id", "w", app, "sh", "-c", "echo x > /run/northstar/secret"); r.err == nil {
		t.Errorf("the container wrote its secret:\n%s", r)
	}

	// A rotation revoking one: the other follows, this one loses its
	// secret and its API.
	badDir := registeredDir(t, s.sock, bad)
	if r := s.ctl(t, "rotate", "--revoke", bad); r.err != nil {
		t.Fatalf("rotate --revoke:\n%s", r)
	}
	followed(t, appPid, e.secretHex(t), "")
	for deadline := time.Now().Add(2 * time.Second); secretOf(t, badPid) != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the revoked container still reads a secret 2 s after the rotation")
		}
	}
	if r := c.ctr(t, "task", "exec", "--exec-id", "id2", bad, "/bin/nsapi", "identity"); r.err == nil {
		t.Errorf("the revoked container's API still answers:\n%s", r)
	}
	if _, err := client.New(filepath.Join(badDir, "api.sock")).Identity(context.Background()); err == nil {
		t.Error("the revoked container's socket still answers")
	}

	// Gone: nothing of them stays, staging mounts and API filesystems
	// included.
	s.remove(t, app)
	s.remove(t, bad)
	containers := filepath.Dir(badDir)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := s.c.mountsUnder(t, containers)
		registered := append(registeredDirs(t, s.sock, app), registeredDirs(t, s.sock, bad)...)
		ents, _ := os.ReadDir(containers)
		var names []string
		for _, e := range ents {
			if e.IsDir() {
				names = append(names, e.Name())
			}
		}
		if len(registered) == 0 && len(left) == 0 && len(names) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the containers went: registered %v, mounts left %v, directories %v", registered, left, names)
		}
	}
}

// TestShimHostileImagesNoHook runs the hook's attack table
// (hostile_test.go) through the shim with the agent: runc mounts what the
// agent built (the destination resolved inside the rootfs, /proc
// refused), nothing of northstar's runs before the container's process,
// and the agent checks the mounts in the created container when runc has
// written its pid (mount.CheckMounted) and kills one whose mounts went
// elsewhere. containerd's default spec mounts a tmpfs at /run, which
// covers what an image plants below /run; an image whose /run is a
// symlink or a file does not run: runc cannot mount (a file), or the
// agent kills it (each container sleeps 2 s before it reads, so the
// kill lands first). The host directory stays as it was, but for the
// empty directory runc may make in a writable volume an image's symlink
// sends it to (docs/security.md).
func TestShimHostileImagesNoHook(t *testing.T) {
	s := newShimAgent(t, "")
	want := s.e.secretHex(t)
	agentLog := filepath.Join(s.c.dir, "agent.log")
	logAt := func() int {
		b, _ := os.ReadFile(agentLog)
		return len(b)
	}
	at := logAt()
	shimHostile(t, s.a, s.c, "sleep 2; cat /run/northstar/secret", func(t *testing.T, tt hostileImage, r result) {
		b, _ := os.ReadFile(agentLog)
		said := string(b[min(at, len(b)):])
		at = len(b)
		if said != "" {
			t.Logf("the agent's log:\n%s", said)
		}
		refuse := replaces(tt.image, "symlink file", "run")
		switch {
		case refuse && r.err == nil:
			t.Errorf("container ran, want it refused:\n%s", r)
		case refuse && !strings.Contains(said, "killing its process") && !strings.Contains(r.stderr, "OCI runtime create failed"):
			t.Errorf("the refusal is neither the agent's nor the runtime's:\n%s", r)
		case !refuse && (r.err != nil || !strings.Contains(r.stdout, want)):
			t.Errorf("container did not read its secret:\n%s", r)
		}
	}, true)
}

// TestShimNoHookSharedPropagation: a container with a shared mount (or a
// shared root) gets the hook, not the agent's mounts: a mount of ours
// below a shared one would propagate to its peers on the host. The hook
// refuses a shared target as it always has.
func TestShimNoHookSharedPropagation(t *testing.T) {
	s := newShimAgent(t, "")
	host := victimDir(t)
	id := s.c.newID("shared")
	r := s.run(t, id, true, []string{"--mount", "type=bind,src=" + host + ",dst=/vol,options=rbind:rw:rshared"}, "sleep 600")
	if r.err != nil {
		t.Fatalf("ctr run:\n%s", r)
	}
	defer s.remove(t, id)
	spec := s.c.bundleSpec(t, id)
	hooked := false
	for _, h := range spec.Hooks.CreateRuntime {
		hooked = hooked || entry.IsNorthstar(h)
	}
	for _, m := range spec.Mounts {
		if strings.HasPrefix(m.Destination, "/run/northstar") {
			t.Errorf("a container with a shared mount got the agent's mount at %s", m.Destination)
		}
	}
	if !hooked {
		t.Error("a container with a shared mount got no hook")
	}
	if got, want := secretOf(t, s.taskPid(t, id)), s.e.secretHex(t); got != want {
		t.Errorf("the container read %q, want %s", got, want)
	}
}

// TestShimNeighbourSharesPIDNamespace: TestNeighbourSharesAPIDNamespace
// through the shim. The victim gets the agent's mounts (no hook); mallory
// joins its PID namespace, so she gets the hook, which registers her
// with her process: as another identity she is refused at start, and
// without northstar of her own her connections to the victim's sockets
// are refused.
func TestShimNeighbourSharesPIDNamespace(t *testing.T) {
	s := newShimAgent(t, "")
	victim := s.c.newID("victim")
	s.run(t, victim, true, []string{"--annotation", "io.northstar.identity=victim"}, "sleep 600")
	defer s.remove(t, victim)
	checkNoHook(t, s.c.bundleSpec(t, victim), true)
	pid := s.taskPid(t, victim)
	share := []string{"--with-ns", fmt.Sprintf("pid:/proc/%d/ns/pid", pid)}

	attack := `api=/proc/1/root/run/northstar/api
ls $api
echo "identity: $(NSAPI_SOCKET=$api/api.sock nsapi identity 2>&1)"`
	r := s.run(t, s.c.newID("mallory"), false, append(share, "--annotation", "io.northstar.secret.disable=true", "--annotation", "io.northstar.api.disable=true"), attack)
	t.Logf("mallory, sharing the victim's PID namespace, without northstar, got:\n%s", r.stdout)
	if r.err != nil || !strings.Contains(r.stdout, "api.sock") {
		t.Fatalf("the victim's API directory is not in reach through /proc: the test does not test:\n%s", r)
	}
	if strings.Contains(r.stdout, "identity: victim") {
		t.Errorf("mallory spoke as the victim:\n%s", r.stdout)
	}

	r = s.run(t, s.c.newID("mallory"), false, append(share, "--annotation", "io.northstar.identity=mallory"), "nsapi identity")
	t.Logf("mallory as identity mallory: %v\n%s", r.err, r.stderr)
	if r.err == nil || !strings.Contains(r.stderr, "shares its PID namespace with container "+victim) {
		t.Errorf("a container of another identity in the victim's PID namespace started, or the refusal does not name it:\n%s", r)
	}
	if got := mustCtr(t, s.c, "task", "exec", "--exec-id", "v", victim, "/bin/nsapi", "identity").stdout; !strings.HasPrefix(got, "victim ") {
		t.Errorf("the victim's identity: %q", got)
	}
}

// TestShimMeasuredNoHook: with [measure] enable, a container the shim
// hands the agent's mounts is logged in the measured-container log as
// delivered by "shim", with the SHA-256 of the config.json containerd
// wrote and its root filesystem as its init process sees it.
func TestShimMeasuredNoHook(t *testing.T) {
	a := requiresContainerd(t)
	tpm := newSWTPM(t, a)
	sock := agentSocket(t, a)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n[measure]\nenable = true\ninterval = \"20ms\"\n", tpm.path(), sock), a)
	c := startContainerd(t, a, "NORTHSTAR_CONFIG="+e.config)
	startAgentIn(t, c, e, sock)
	s := &shimAgent{a: a, e: e, c: c, sock: sock}
	id := c.newID("measured")
	s.run(t, id, true, nil, "sleep 600")
	defer s.remove(t, id)
	checkNoHook(t, c.bundleSpec(t, id), false)
	var got []containerlog.Event
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got = nil
		data, _ := os.ReadFile(filepath.Join(e.dir, "state", measure.FileName))
		recs, _ := containerlog.Parse(data)
		for _, r := range recs {
			if ev, err := r.Event(); err == nil && ev.ID == id {
				got = append(got, ev)
			}
		}
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(got) != 1 {
		t.Fatalf("the log has %d events of %s, want 1: %+v", len(got), id, got)
	}
	ev := got[0]
	if ev.Via != "shim" || ev.Config == ([32]byte{}) || ev.Rootfs == "" || strings.HasPrefix(ev.Rootfs, "unknown") {
		t.Errorf("logged %+v, want delivered by the shim, a config digest and the rootfs", ev)
	}
	t.Logf("logged: via %s, config %x, rootfs %s", ev.Via, ev.Config, ev.Rootfs)
}

// TestShimFastPath: with the agent running, the wrapper's `start` never
// reaches Go. The process containerd runs as containerd-shim-northstar-v2
// becomes the runc shim without starting a thread (the Go runtime starts
// its first before main), and the container reads its secret through the
// agent's mounts: the agent did the wrapper's work (shim/fastpath). The
// first start after containerd started is the Go wrapper's (its rotation
// seals, in a child of the wrapper); with NORTHSTAR_SHIM_NO_FAST_PATH=1
// in containerd's environment every start is, and its threads show.
func TestShimFastPath(t *testing.T) {
	requires(t, "strace")
	for _, tc := range []struct {
		name string
		env  []string
		fast []bool // each start's
	}{{"fast path", nil, []bool{false, true, true}}, {"Go wrapper", []string{"NORTHSTAR_SHIM_NO_FAST_PATH=1"}, []bool{false, false}}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newShimAgent(t, "", tc.env...)
			trace := traceExecs(t, s.c.pid(t))
			for range tc.fast {
				r := s.run(t, s.c.newID("fast"), false, nil, "cat /run/northstar/secret")
				if r.err != nil || strings.TrimSpace(r.stdout) != s.e.secretHex(t) {
					t.Fatalf("the container did not read the store's secret:\n%s", r)
				}
			}
			log := trace.stop(t)
			defer func() {
				if t.Failed() {
					t.Logf("strace -f of containerd:\n%s", log)
				}
			}()
			starts := log.wrapperStarts()
			if len(starts) != len(tc.fast) {
				t.Fatalf("traced %d starts of the wrapper, want %d", len(starts), len(tc.fast))
			}
			for i, w := range starts {
				if w.next != "containerd-shim-runc-v2" {
					t.Errorf("start %d of the wrapper became %q, want the runc shim", i, w.next)
				}
				if fast := w.threads == 0; fast != tc.fast[i] {
					t.Errorf("start %d of the wrapper started %d threads before it became the runc shim; want the fast path %v", i, w.threads, tc.fast[i])
				}
			}
		})
	}
}

// execTrace is strace following a process and its children's execs and
// clones.
type execTrace struct {
	cmd *exec.Cmd
	out string
}

func traceExecs(t *testing.T, pid int) *execTrace {
	t.Helper()
	tr := &execTrace{out: filepath.Join(t.TempDir(), "strace")}
	tr.cmd = exec.Command("strace", "-f", "-o", tr.out, "-e", "trace=execve,clone,clone3,fork,vfork", "-p", strconv.Itoa(pid))
	stderr, err := tr.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.cmd.Process.Kill(); tr.cmd.Wait() })
	// strace says "Process N attached with M threads" once it traces all
	// of N's threads; threads started since are followed (-f).
	buf := make([]byte, 4096)
	var said []byte
	for !strings.Contains(string(said), " attached") {
		n, err := stderr.Read(buf)
		if err != nil {
			t.Fatalf("strace -p %d: %v: %s", pid, err, said)
		}
		said = append(said, buf[:n]...)
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	return tr
}

// stop detaches strace and returns what it recorded.
func (tr *execTrace) stop(t *testing.T) straceLog {
	t.Helper()
	_ = tr.cmd.Process.Signal(os.Interrupt)
	_ = tr.cmd.Wait()
	b, err := os.ReadFile(tr.out)
	if err != nil {
		t.Fatal(err)
	}
	return straceLog(b)
}

// straceLog is `strace -f -o` output: each line the tid, then the call.
type straceLog string

// execed is one process that exec'd a binary: the threads it started
// and what it exec'd next ("" if nothing).
type execed struct {
	pid     string
	threads int
	next    string
}

// wrapperStarts finds the wrapper's `start` processes.
func (l straceLog) wrapperStarts() []execed {
	return l.execsOf("containerd-shim-northstar-v2", "start")
}

// execsOf finds the processes that exec'd a binary named name, with
// lastArg as their last argument ("": any).
func (l straceLog) execsOf(name, lastArg string) []execed {
	var starts []*execed
	open := map[string]*execed{} // by tid (the process's and its threads'), until its next exec
	for _, line := range strings.Split(string(l), "\n") {
		tid, call, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		call = strings.TrimSpace(call)
		failed := strings.Contains(call, "= -1 ")
		switch {
		case strings.HasPrefix(call, "execve(\"") && !failed:
			path, _, _ := strings.Cut(strings.TrimPrefix(call, "execve(\""), "\"")
			if w := open[tid]; w != nil {
				// Any thread's exec replaces the whole process.
				w.next = filepath.Base(path)
				for k, v := range open {
					if v == w {
						delete(open, k)
					}
				}
			}
			if filepath.Base(path) == name && (lastArg == "" || strings.Contains(call, strconv.Quote(lastArg)+"]")) {
				w := &execed{pid: tid}
				starts, open[tid] = append(starts, w), w
			}
		case strings.Contains(call, "clone") || strings.HasPrefix(call, "fork") || strings.HasPrefix(call, "vfork"):
			w := open[tid]
			if w == nil || failed {
				continue
			}
			// "clone3(...) = 124" or "<... clone3 resumed> ...) = 124":
			// the new thread's id, counted once.
			if _, ret, ok := strings.Cut(call, ") = "); ok {
				if _, err := strconv.Atoi(strings.Fields(ret)[0]); err == nil {
					w.threads++
					open[strings.Fields(ret)[0]] = w
				}
			}
		}
	}
	out := make([]execed, len(starts))
	for i, w := range starts {
		out[i] = *w
	}
	return out
}
