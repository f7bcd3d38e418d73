// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/registry"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The agent under a hostile neighbour, second round (DESIGN.md §15): one
// test per point, real runc (and podman) containers as the attacker and
// the victim, each printing what the attacker got.

// sharePID puts the bundle's container in the PID namespace of process
// pid (podman --pid container:X, Kubernetes shareProcessNamespace).
func (b *bundle) sharePID(pid int) *bundle {
	for i, ns := range b.spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			b.spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/pid", pid)
		}
	}
	return b
}

// annotate sets annotations on the bundle's spec.
func (b *bundle) annotate(kv ...string) *bundle {
	if b.spec.Annotations == nil {
		b.spec.Annotations = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.spec.Annotations[kv[i]] = kv[i+1]
	}
	return b
}

// TestNeighbourSharesAPIDNamespace: mallory shares the victim's PID
// namespace and goes for its sockets through /proc/1/root. Before, she
// got the victim's identity, its SVID and tokens that verify as the
// victim. Now each connection is checked against the container's mount
// namespace, and a container of another identity that would share the
// victim's PID namespace is refused at start.
func TestNeighbourSharesAPIDNamespace(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-share")
	victim := spiffeBundle(t, e, "victim", "sleep 600").runDetached(t, root, fmt.Sprintf("victim-%d", containerSeq.Add(1)))
	pid := victim.pid(t)

	// Mallory without northstar of her own (the hook registers nothing),
	// in the victim's PID namespace: the victim's sockets are in reach at
	// /proc/1/root/run/northstar/api.
	attack := `api=/proc/1/root/run/northstar/api
ls $api
echo "identity: $(NSAPI_SOCKET=$api/api.sock nsapi identity 2>&1)"
echo "token: $(NSAPI_SOCKET=$api/api.sock nsapi token victim mqtt 2>&1 | head -c 120)"
echo "svid: $(SPIFFE_ENDPOINT_SOCKET=unix://$api/spiffe.sock busybox timeout 5 nsspiffe x509 2>&1 | head -c 120)"
echo "secret file: $(wc -c < /proc/1/root/run/northstar/secret 2>&1) bytes (not defended: see docs/security.md)"
`
	r := spiffeBundle(t, e, "", attack).annotate("io.northstar.secret.disable", "true", "io.northstar.api.disable", "true").sharePID(pid).runcRun(t)
	t.Logf("mallory, sharing the victim's PID namespace, without northstar, got:\n%s", r.stdout)
	if r.err != nil {
		t.Fatalf("mallory's container:\n%s", r)
	}
	if !strings.Contains(r.stdout, "api.sock") {
		t.Fatalf("the victim's API directory is not in reach through /proc: the test does not test:\n%s", r.stdout)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "identity: victim") || strings.HasPrefix(l, "svid: spiffe://") || strings.HasPrefix(l, "token: ") && !strings.Contains(l, "nsapi:") {
			t.Errorf("mallory spoke as the victim: %s", l)
		}
	}

	// Mallory with northstar and an identity of her own: refused at start.
	r = spiffeBundle(t, e, "mallory", "nsapi identity").sharePID(pid).runcRun(t)
	t.Logf("mallory, sharing the victim's PID namespace as identity mallory: %v\n%s", r.err, r.stderr)
	if r.err == nil || !strings.Contains(r.stderr, "shares its PID namespace with container "+victim.id) {
		t.Errorf("a container of another identity in the victim's PID namespace started, or the refusal does not name it:\n%s", r)
	}

	// The victim, meanwhile, is itself.
	if got := victim.sh(t, "nsapi identity"); !strings.HasPrefix(got, "victim ") {
		t.Errorf("the victim's identity: %q", got)
	}
	if got := victim.sh(t, "nsspiffe x509 | cut -d' ' -f1"); got != "spiffe://example.org/victim" {
		t.Errorf("the victim's SVID: %q", got)
	}
}

// TestNeighbourRestartsUnderItsID: mallory runs under podman's
// --restart=always; the admin revokes her, her process exits (as a
// compromised one would, to come back), and podman starts her again under
// the same id. Before, the new instance got the new secret and its API
// back. Now the id stays revoked: the restart fails closed naming the
// revocation and the command that lifts it; after the lift she starts.
func TestNeighbourRestartsUnderItsID(t *testing.T) {
	requires(t, "podman", "runc")
	sock := agentSocket(t, nil)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", sock), nil)
	p := newTestPodman(t, nil, e)
	// Podman restarts a container from the cleanup process conmon runs,
	// whose command line has no --hooks-dir: the hooks directory goes
	// in a containers.conf that process reads too, as a host's would.
	conf := filepath.Join(p.dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[engine]\nhooks_dir = [%q]\n", p.hooks)), 0o644); err != nil {
		t.Fatal(err)
	}
	podman := func(args ...string) *exec.Cmd {
		cmd := p.cmd(args...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
		return cmd
	}
	startAgent(t, e, sock)
	(&bundle{rootfs: p.rootfs}).withNsapi(t, "")
	name := fmt.Sprintf("mallory-%d", containerSeq.Add(1))
	// Each start says what it got, then lives until its socket goes.
	script := `echo "start: $(nsapi identity 2>&1) secret=$(wc -c < /run/northstar/secret 2>&1)"; while [ -e /run/northstar/api/api.sock ]; do sleep 0.2; done; exit 1`
	r := run(t, podman("run", "-d", "--name", name, "--restart=always", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"--annotation", "io.northstar.identity=mallory", "--rootfs", p.rootfs, "/bin/sh", "-c", script))
	if r.err != nil {
		t.Fatalf("podman run:\n%s", r)
	}
	t.Cleanup(func() { _ = podman("rm", "-f", name).Run() })
	id := strings.TrimSpace(r.stdout)
	logs := func() string {
		out, _ := podman("logs", name).CombinedOutput()
		return string(out)
	}
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(logs(), "start: mallory") }, func() string { return "mallory never started: " + logs() })

	if r := e.ctl(t, "revoke", id); r.err != nil {
		t.Fatalf("northstarctl revoke:\n%s", r)
	}
	state := func() string {
		out, _ := podman("inspect", "--format", "{{.State.Status}} restarts={{.RestartCount}} error={{.State.Error}}", name).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	// Podman restarts her once her socket is gone, and the start fails.
	waitFor(t, 30*time.Second, func() bool {
		s := state()
		return !strings.HasPrefix(s, "running") && !strings.Contains(s, "restarts=0")
	},
		func() string { return "podman never restarted mallory: " + state() + "\n" + logs() })
	time.Sleep(2 * time.Second) // any further restart would have run by now
	st, lg := state(), logs()
	t.Logf("mallory after her revocation and podman's restart: %s\nher starts printed:\n%s", st, lg)
	if n := strings.Count(lg, "start: mallory"); n != 1 {
		t.Errorf("mallory got her API back under her revoked id (%d starts spoke as mallory)", n)
	}
	if strings.HasPrefix(st, "running") {
		t.Errorf("mallory runs again after her revocation: %s", st)
	}
	r = run(t, podman("start", name))
	t.Logf("podman start of the revoked id: %v\n%s", r.err, r.stderr)
	if r.err == nil || !strings.Contains(r.stderr, "revoked") || !strings.Contains(r.stderr, "northstarctl revoke --lift "+id) {
		t.Errorf("a start of the revoked id did not fail naming the revocation and the lift:\n%s", r)
	}

	// Lifted: she starts again, audited.
	if r := e.ctl(t, "revoke", "--lift", id); r.err != nil {
		t.Fatalf("northstarctl revoke --lift:\n%s", r)
	}
	if r := run(t, podman("start", name)); r.err != nil {
		t.Fatalf("a start after the lift:\n%s", r)
	}
	waitFor(t, 20*time.Second, func() bool { return strings.Count(logs(), "start: mallory") == 2 }, func() string { return "mallory did not start after the lift: " + logs() })
	waitFor(t, 20*time.Second, func() bool {
		data, _ := os.ReadFile(filepath.Join(e.dir, "state", "audit.log"))
		return strings.Contains(string(data), `"revocation-lifted"`) && strings.Contains(string(data), id)
	}, func() string { return "no audit line of the lift" })
}

// waitFor polls cond until it holds, failing with why() after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, why func() string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(why())
		}
	}
}

// TestNeighbourRemountsItsAPIDir: mallory, rootful with CAP_SYS_ADMIN,
// remounts /run/northstar/api read-write and writes a megabyte there.
// Before, it landed in the agent's host directory (the mount was a bind
// of it). Now the directory is a capped filesystem of the container's
// own: the write stops at its cap, and nothing reaches the agent's
// directories.
func TestNeighbourRemountsItsAPIDir(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnvWith(t, "")
	startAgent(t, e, sock)
	b := apiBundle(t, e, "mallory", `{
mount -o remount,rw /run/northstar/api || mount -o remount,bind,rw /run/northstar/api
echo "remount: $?"
busybox dd if=/dev/zero of=/run/northstar/api/planted bs=1k count=1024 2>&1 | tail -1
echo "planted: $(wc -c < /run/northstar/api/planted) bytes"
echo "mount: $(grep ' /run/northstar/api ' /proc/self/mountinfo | cut -d' ' -f6-)"
echo end.
} > /out 2>&1; sleep 600`)
	caps := b.spec.Process.Capabilities
	caps.Bounding = append(caps.Bounding, "CAP_SYS_ADMIN")
	caps.Effective = append(caps.Effective, "CAP_SYS_ADMIN")
	caps.Permitted = append(caps.Permitted, "CAP_SYS_ADMIN")
	d := b.runDetached(t, filepath.Join(e.dir, "runc-remount"), fmt.Sprintf("mallory-%d", containerSeq.Add(1)))
	out := d.waitOut(t, "end.", 30*time.Second)
	t.Logf("mallory with CAP_SYS_ADMIN got:\n%s", out)
	if !strings.Contains(out, "remount: 0") {
		t.Fatalf("the remount failed: the test does not test:\n%s", out)
	}
	planted := field(strings.ReplaceAll(out, "planted: ", "planted="), "planted")
	if n, _ := strconv.Atoi(strings.TrimSuffix(planted, " bytes")); n >= 1<<20 || n > 16<<10 {
		t.Errorf("mallory planted %s in her API directory, want at most its 16 KiB cap", planted)
	}
	// Nothing of hers on the agent's filesystems: every regular file
	// under the agent's directory and the state directory is the agent's.
	agentDir := filepath.Dir(sock)
	var st unix.Statfs_t
	for _, root := range []string{agentDir, filepath.Join(e.dir, "state")} {
		_ = filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Name() == "planted" {
				// Reached through the container's own mount on the host
				// side is fine only if it is that capped tmpfs.
				if unix.Statfs(path, &st) == nil && st.Type == unix.TMPFS_MAGIC && st.Blocks*uint64(st.Bsize) <= 16<<10 {
					return nil
				}
				t.Errorf("mallory's file landed in the agent's directory: %s", path)
			}
			return nil
		})
	}
	d.delete(t)
	// Her filesystem goes with her.
	waitFor(t, 10*time.Second, func() bool {
		found := false
		_ = filepath.Walk(agentDir, func(path string, fi os.FileInfo, err error) error {
			found = found || err == nil && fi.Name() == "planted"
			return nil
		})
		return !found
	}, func() string { return "mallory's planted file stays after her container is gone" })
}

// TestNeighbourFloodsSpiffeAndIsRevoked: mallory floods her spiffe.sock
// from eight loops, her calls held in the rate's tarpit, and the admin
// revokes her meanwhile. Before, the agent crashed for every container
// (a nil dereference in a gRPC handler) before it recorded the
// revocation. Now the agent serves on, the victim included, and
// registry.json records her revoked.
func TestNeighbourFloodsSpiffeAndIsRevoked(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	// A rate the flood is far over (the [api] table is before [spiffe]).
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(data), "[api]\nenable = true\n", "[api]\nenable = true\nrate = 2\nburst = 2\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-flood")
	victim := spiffeBundle(t, e, "victim", "sleep 600").runDetached(t, root, fmt.Sprintf("victim-%d", containerSeq.Add(1)))
	mallory := spiffeBundle(t, e, "mallory", `for i in 1 2 3 4 5 6 7 8; do (while true; do nsspiffe jwt x >/dev/null 2>&1; done) & done; sleep 600`).
		runDetached(t, root, fmt.Sprintf("mallory-%d", containerSeq.Add(1)))
	time.Sleep(2 * time.Second) // the flood is on, calls wait in the tarpit
	if r := e.ctl(t, "rotate", "--revoke", mallory.id); r.err != nil {
		t.Fatalf("northstarctl rotate --revoke:\n%s", r)
	}
	waitFor(t, 10*time.Second, func() bool {
		saved, err := registry.ReadSaved(sock)
		if err != nil {
			return false
		}
		for _, c := range saved.Containers {
			if c.ID == mallory.id && c.Revoked {
				return true
			}
		}
		return false
	}, func() string {
		return "registry.json never recorded the revocation; the agent's output:\n" + ag.out.String()
	})
	time.Sleep(time.Second) // the flood goes on against the closed socket
	select {
	case err := <-ag.done:
		ag.done <- err
		t.Fatalf("the agent exited (%v) as mallory was revoked mid-flood; its output:\n%s", err, ag.out)
	default:
	}
	got := mallory.exec(t, "sh", "-c", `echo "jwt-svid: $(busybox timeout 5 nsspiffe jwt x 2>&1 | head -c 160) (exit $?)"; echo "api dir: $(ls /run/northstar/api/ 2>&1)"`)
	t.Logf("mallory, revoked mid-flood, then got:\n%s", got.stdout)
	if strings.Contains(got.stdout, "eyJ") {
		t.Errorf("mallory got a JWT-SVID after her revocation:\n%s", got.stdout)
	}
	if id := victim.sh(t, "nsspiffe x509 | cut -d' ' -f1"); id != "spiffe://example.org/victim" {
		t.Errorf("the victim's SVID after the revocation: %q", id)
	}
	if got := victim.sh(t, "nsapi identity"); !strings.HasPrefix(got, "victim ") {
		t.Errorf("the victim's identity after the revocation: %q", got)
	}
}

// TestNeighbourValidatesJunk: mallory calls ValidateJWTSVID with junk in
// a loop. Before, each call was an audit line of its own (6.4 MB in
// 10 s at full speed, the whole history rotated out in 80 s). Now they
// are refusals, counted into her socket's one line per 10 s.
func TestNeighbourValidatesJunk(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	startAgent(t, e, sock)
	const n = 200
	start := time.Now()
	r := spiffeBundle(t, e, "mallory", fmt.Sprintf(`nsspiffe jwt mallory >/dev/null || exit 1; i=0; while [ $i -lt %d ]; do nsspiffe validate junk.junk.junk mallory 2>/dev/null; i=$((i+1)); done; echo done`, n)).runcRun(t)
	if r.err != nil || !strings.Contains(r.stdout, "done") {
		t.Fatalf("mallory's container:\n%s", r)
	}
	took := time.Since(start)
	auditLog := filepath.Join(e.dir, "state", "audit.log")
	var validated, lines, counted int
	waitFor(t, 2*api.RefusalInterval+5*time.Second, func() bool {
		data, _ := os.ReadFile(auditLog)
		validated, lines, counted = 0, 0, 0
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, `"spiffe-jwt-validated"`) {
				validated++
			}
			if strings.Contains(l, `"refused"`) && strings.Contains(l, `"mallory"`) {
				lines++
				var entry struct{ Fields map[string]string }
				if json.Unmarshal([]byte(l), &entry) == nil {
					c, _ := strconv.Atoi(entry.Fields["count"])
					counted += c
				}
			}
		}
		return counted >= n
	}, func() string {
		data, _ := os.ReadFile(auditLog)
		return fmt.Sprintf("mallory's junk validations: %d counted in %d refusal lines, want %d; the audit log:\n%s", counted, lines, n, data)
	})
	t.Logf("%d junk validations by mallory in %v: %d validation lines, %d refusal line(s) counting %d", n, took.Round(time.Millisecond), validated, lines, counted)
	// One line per 10 s window the flood spanned (and the one it ended in).
	if most := int(took/api.RefusalInterval) + 2; validated != 0 || lines > most || counted != n {
		t.Errorf("want no validation line and at most %d refusal lines counting %d", most, n)
	}
}

// hangRun puts a FUSE mount at /run in the mount namespace of process
// pid whose server never answers (nobody reads the device): every lookup
// below /run there hangs, as with a FUSE server that stopped. It returns
// the device, whose closing aborts the connection and frees the callers.
func hangRun(t *testing.T, pid int) *os.File {
	t.Helper()
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "--", "mount", "-t", "fuse", "-o", "fd=3,rootmode=40000,user_id=0,group_id=0", "hung", "/run")
	cmd.ExtraFiles = []*os.File{dev}
	mustRun(t, cmd)
	t.Cleanup(func() {
		dev.Close()
		_ = exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "--", "umount", "-l", "/run").Run()
	})
	return dev
}

// TestNeighbourHangsItsMountTree: before each of three agent restarts,
// two more containers hang their mount tree (a FUSE mount at /run whose
// server never answers). Before, each restart waited 2 s for each hung
// container before it served anyone, and each left a thread stuck in
// the container's namespace. Now a restart serves within the take-back's
// short wait, the others are caught up, and the agent's threads do not
// grow from one restart to the next.
func TestNeighbourHangsItsMountTree(t *testing.T) {
	requires(t, "runc", "nsenter")
	requiresFile(t, "/dev/fuse", "the fuse kernel module")
	e, sock := liveEnv(t, "5m", "")
	a := startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-hang")
	kept := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config).runDetached(t, root, fmt.Sprintf("kept-%d", containerSeq.Add(1)))
	var counts []int
	for round := range 3 {
		// Two more each round: a take-back that did not finish is not
		// tried again, so each restart meets two fresh ones.
		for range 2 {
			d := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config).runDetached(t, root, fmt.Sprintf("hung-%d", containerSeq.Add(1)))
			hangRun(t, d.pid(t))
		}
		a.stop(t)
		mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
		start := time.Now()
		a = startAgent(t, e, sock)
		took := time.Since(start)
		caught := waitFollows(t, e.secretHex(t), kept)
		time.Sleep(3 * time.Second) // past the 2 s a hung take-back is given
		n := procEntries(t, a.cmd.Process.Pid, "task")
		counts = append(counts, n)
		t.Logf("restart %d with two hung containers: serving after %v, the others caught up %v after, %d threads", round, took.Round(time.Millisecond), caught.Round(time.Millisecond), n)
		if took > 3*time.Second {
			t.Errorf("restart %d: the agent served after %v, held up by the hung containers", round, took)
		}
	}
	// The Go runtime's own threads vary by a few from one process to
	// the next; a thread left per hung take-back and restart would add
	// two a round.
	if counts[2] > counts[0]+4 {
		t.Errorf("the agent's threads grow from restart to restart: %v", counts)
	}
	if st := e.ctl(t, "status"); !strings.Contains(st.stdout, "did not finish") {
		t.Errorf("status does not say the hung containers cannot follow:\n%s", st)
	}
}
