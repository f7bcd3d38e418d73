// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/registry"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Live rotation (DESIGN.md §12): a rotation reaches the containers that
// already run, every way in that make test covers, and a compromised one
// can be cut off alone.

// followScript, run in a container, reads its secret, leaves the file
// /dev/shm/<marker> to say so, waits (at most 20 s) until a rotation has
// put the one before beside it, and prints the secret it had, the one it
// reads now, the one before, then what writing there does: the
// container's view must stay read-only.
func followScript(marker string) string {
	return `cat /run/northstar/secret; echo; : > /dev/shm/` + marker + `
i=0; while [ ! -e /run/northstar/secret.previous ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
cat /run/northstar/secret; echo
cat /run/northstar/secret.previous; echo
touch /run/northstar/new 2>&1; echo x 2>&1 > /run/northstar/secret; true`
}

// checkFollowed checks the output of followScript: it had old, reads new
// with old before it, and could write nothing.
func checkFollowed(t *testing.T, way string, r result, old, new string) {
	t.Helper()
	lines := strings.Split(r.stdout, "\n")
	if r.err != nil || len(lines) < 4 {
		t.Fatalf("%s: the container running through the rotation:\n%s", way, r)
	}
	if lines[0] != old || lines[1] != new || lines[2] != old {
		t.Errorf("%s: the running container read %q, then %q with %q before it; want %s, then %s with %s before it", way, lines[0], lines[1], lines[2], old, new, old)
	}
	if n := strings.Count(r.stdout+r.stderr, "Read-only file system"); n < 2 {
		t.Errorf("%s: writing into /run/northstar after the rotation did not fail twice with EROFS:\n%s", way, r)
	}
}

// throughRotation starts a container running followScript with start,
// rotates once it has read its secret, and returns what it printed, and
// the secret before and after.
func throughRotation(t *testing.T, e *env, start func(script string) result, rotate func()) (r result, old, new string) {
	t.Helper()
	old = e.secretHex(t)
	marker := fmt.Sprintf("northstar-read-%d", time.Now().UnixNano())
	done := make(chan result, 1)
	go func() { done <- start(followScript(marker)) }()
	// Rotate once the container has read its secret, which a slow start
	// (the first rootful podman run of a CI machine) takes seconds to do:
	// its marker shows in its /dev/shm, seen from the host through the
	// /proc/PID/root of any of its processes, in whatever pid namespace.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m, _ := filepath.Glob("/proc/[0-9]*/root/dev/shm/" + marker); len(m) > 0 {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the container ended before it read its secret:\n%s", r)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not read its secret within 30 s")
		}
	}
	rotate()
	r = <-done
	return r, old, e.secretHex(t)
}

// liveEnv is a host-sealer env with the agent, live rotation and a short
// grace, and with extra appended.
func liveEnv(t *testing.T, grace string, extra string) (*env, string) {
	t.Helper()
	sock := agentSocket(t, nil)
	return newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[rotation]\ngrace = %q\n%s", sock, grace, extra), nil), sock
}

// readIn reads /run/northstar/NAME in a detached container ("" when absent).
func readIn(t *testing.T, d *detached, name string) string {
	t.Helper()
	r := d.exec(t, "cat", "/run/northstar/"+name)
	if r.err != nil {
		return ""
	}
	return r.stdout
}

// waitFollows waits until every container in ds reads want (its
// secret), at most 2 s after the call, and returns how long it took.
func waitFollows(t *testing.T, want string, ds ...*detached) time.Duration {
	t.Helper()
	t0 := time.Now()
	for _, d := range ds {
		for deadline := t0.Add(2 * time.Second); readIn(t, d, "secret") != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("container %s reads %q 2 s after the rotation, want %s", d.id, readIn(t, d, "secret"), want)
			}
		}
	}
	return time.Since(t0)
}

// TestLiveRotationRunc: with rootful runc, a rotation reaches the running
// containers (with and without the API) within 2 s: the new secret,
// atomically, owner and mode as delivered, the one before beside it for
// the grace period and then gone; the view stays read-only.
func TestLiveRotationRunc(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "3s", "")
	startAgent(t, e, sock)
	r, old, new := throughRotation(t, e, func(script string) result {
		b := newBundle(t, e.dir, false, script).withHook("createRuntime", e.config)
		b.spec.Process.User.UID, b.spec.Process.User.GID = 1000, 1000
		b.spec.Annotations = map[string]string{"io.northstar.secret.mode": "0440"}
		return b.runcRun(t)
	}, func() { mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config)) })
	checkFollowed(t, "runc", r, old, new)

	// Owner and mode kept; the one before gone after the grace.
	root := filepath.Join(e.dir, "runc-live")
	d := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config).runDetached(t, root, "long")
	before := e.secretHex(t)
	mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
	took := waitFollows(t, e.secretHex(t), d)
	t.Logf("a running container read the rotated secret %v after northstarctl rotate returned", took.Round(time.Millisecond))
	if got := readIn(t, d, "secret.previous"); got != before {
		t.Errorf("secret.previous %q, want the secret it had", got)
	}
	if st := d.sh(t, "stat -c '%u:%g %a' /run/northstar/secret /run/northstar/secret.previous"); st != "0:0 400\n0:0 400" {
		t.Errorf("owner and mode after the rotation: %q, want 0:0 400 as delivered", st)
	}
	time.Sleep(4 * time.Second)
	if got := readIn(t, d, "secret.previous"); got != "" {
		t.Errorf("secret.previous still there after the grace: %q", got)
	}
	// Status lists it with the generation it holds.
	st := e.ctl(t, "status")
	if gen := e.record(t).Generation; !strings.Contains(st.stdout, fmt.Sprintf("generation %-4d follows rotations", gen)) {
		t.Errorf("status does not list the container following at generation %d:\n%s", gen, st)
	}
}

// TestLiveRotationRevoke: northstarctl rotate --revoke cuts one container
// off: it loses its secret and the one before at once, its API socket
// closes, the tokens it minted stop verifying; the others get the new
// secret and carry on.
func TestLiveRotationRevoke(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "5m", "[api]\nenable = true\n")
	startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-revoke")
	good := apiBundle(t, e, "client", "sleep 600").runDetached(t, root, "good")
	bad := apiBundle(t, e, "mallory", "sleep 600").runDetached(t, root, "bad")
	server := apiBundle(t, e, "server", "sleep 600").runDetached(t, root, "server")
	stolen := bad.sh(t, "nsapi token server mqtt") // minted before the revocation
	honest := good.sh(t, "nsapi token server mqtt")
	r := e.ctl(t, "rotate", "--revoke", "bad")
	if r.err != nil || !strings.Contains(r.stdout, "revoked: bad") {
		t.Fatalf("rotate --revoke:\n%s", r)
	}
	waitFollows(t, e.secretHex(t), good, server)
	for deadline := time.Now().Add(2 * time.Second); readIn(t, bad, "secret") != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the revoked container still reads a secret 2 s after the rotation")
		}
	}
	if got := readIn(t, bad, "secret.previous"); got != "" {
		t.Errorf("the revoked container keeps the one before: %q", got)
	}
	// The others keep no secret before it either: the revoked container
	// knew that one, and a server taking the one before during the grace
	// would let its copy in.
	if got := readIn(t, good, "secret.previous"); got != "" {
		t.Errorf("after a revoking rotation another container keeps the secret before it")
	}
	if r := bad.exec(t, "nsapi", "identity"); r.err == nil {
		t.Errorf("the revoked container's API still answers:\n%s", r)
	}
	if got := server.sh(t, "nsapi verify "+stolen+" mallory mqtt"); got != "revoked" {
		t.Errorf("a token the revoked container minted: %q, want revoked", got)
	}
	if got := server.sh(t, "nsapi verify "+honest+" client mqtt"); got != "valid" {
		t.Errorf("another container's token after the revocation: %q, want valid", got)
	}
	if got := good.sh(t, "nsapi identity"); !strings.HasPrefix(got, "client ") {
		t.Errorf("the other container's API after the revocation: %q", got)
	}
	if st := e.ctl(t, "status"); !strings.Contains(st.stdout, "revoked") {
		t.Errorf("status does not say the container was revoked:\n%s", st)
	}
	// The id stays revoked (DESIGN.md §15): a container started with it
	// fails, naming the lift; once lifted, it gets the current secret.
	bad.delete(t)
	b := apiBundle(t, e, "mallory", "sleep 600")
	b.write(t)
	r = run(t, exec.Command("runc", "--root", root, "run", "--detach", "--bundle", b.dir, "bad"))
	t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", "bad").Run() })
	if r.err == nil || !strings.Contains(r.stderr, "northstarctl revoke --lift bad") {
		t.Fatalf("a container with the revoked id started, or its refusal does not name the lift:\n%s", r)
	}
	_ = exec.Command("runc", "--root", root, "delete", "-f", "bad").Run()
	if r := e.ctl(t, "revoke", "--lift", "bad"); r.err != nil {
		t.Fatalf("northstarctl revoke --lift:\n%s", r)
	}
	again := apiBundle(t, e, "mallory", "sleep 600").runDetached(t, root, "bad")
	if got := readIn(t, again, "secret"); got != e.secretHex(t) {
		t.Errorf("a container with the id once lifted reads %q, want the current secret", got)
	}
}

// TestLiveRotationAgentRestart: a restarted agent takes its running
// containers back and catches them up to a rotation made while it was
// down; a container that replaced its /run/northstar with a tmpfs of its
// own (it holds CAP_SYS_ADMIN) gets nothing written there, and status
// says it no longer follows.
func TestLiveRotationAgentRestart(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "5m", "")
	a := startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-restart")
	kept := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config).runDetached(t, root, "kept")
	b := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config)
	b.spec.Process.Capabilities.Bounding = append(b.spec.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
	b.spec.Process.Capabilities.Effective = append(b.spec.Process.Capabilities.Effective, "CAP_SYS_ADMIN")
	b.spec.Process.Capabilities.Permitted = append(b.spec.Process.Capabilities.Permitted, "CAP_SYS_ADMIN")
	b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"})
	swapper := b.runDetached(t, root, "swapper")
	old := e.secretHex(t)
	a.stop(t)
	// While the agent is down: a rotation, and a container that puts a
	// tmpfs of its own where its secret was.
	mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
	swapper.sh(t, "umount -l /run/northstar && mount -t tmpfs -o size=64k mine /run/northstar && echo mine > /run/northstar/mine")
	startAgent(t, e, sock)
	took := waitFollows(t, e.secretHex(t), kept)
	t.Logf("the restarted agent caught a running container up %v after it started", took.Round(time.Millisecond))
	if got := readIn(t, kept, "secret.previous"); got != old {
		t.Errorf("after the catch-up secret.previous is %q, want %s", got, old)
	}
	if got := swapper.sh(t, "ls -A /run/northstar"); got != "mine" {
		t.Errorf("the agent wrote into the container's own tmpfs: it holds %q", got)
	}
	if st := e.ctl(t, "status"); !strings.Contains(st.stdout, "no longer the mount northstar gave it") {
		t.Errorf("status does not say the container with its own /run/northstar cannot follow:\n%s", st)
	}
}

// TestLiveRotationFaults: an agent SIGKILLed at any point of a rotation of
// many containers converges every one to the current generation once it
// restarts, and a container deleted during a rotation stops nobody
// else's.
func TestLiveRotationFaults(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "5m", "")
	a := startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-faults")
	var ds []*detached
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := newBundle(t, e.dir, false, "sleep 600").withHook("createRuntime", e.config).runDetached(t, root, fmt.Sprintf("c%d", i))
			mu.Lock()
			ds = append(ds, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	midway := 0
	const kills = 8
	for i := range kills {
		mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
		// Somewhere in the agent's unseal (a child process, a few ms) and
		// delivery (a few ms for these containers).
		time.Sleep(time.Duration(2+i) * time.Millisecond)
		if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-a.done
		want, got := e.secretHex(t), 0
		for _, d := range ds {
			if readIn(t, d, "secret") == want {
				got++
			}
		}
		if got > 0 && got < len(ds) {
			midway++
		}
		t.Logf("killed %d ms after rotate: %d of %d containers had the new secret", 2+i, got, len(ds))
		a = startAgent(t, e, sock)
		waitFollows(t, want, ds...)
	}
	t.Logf("%d of %d kills landed in the middle of a delivery; every one converged", midway, kills)

	// A container deleted while a rotation runs.
	victim := ds[0]
	go victim.delete(t)
	mustRun(t, exec.Command(bins.ctl, "rotate", "--config", e.config))
	waitFollows(t, e.secretHex(t), ds[1:]...)
}

// TestLiveRotationRootlessContainerd: through the northstar shim under
// rootless containerd (Debian's 1.6 and 2.4.2), with the agent in
// rootlesskit's namespaces, a containerd restart rotates and the
// container started before it follows.
func TestLiveRotationRootlessContainerd(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, a *account, flavor []string) {
		sock := agentSocket(t, a)
		e := newEnv(t, fmt.Sprintf("[agent]\nsocket = %q\n", sock), a)
		c := startContainerd(t, a, append(flavor, "NORTHSTAR_CONFIG="+e.config)...)
		startAgentIn(t, c, e, sock)
		// Detached: a containerd restart ends ctr's connection, not the
		// container (its shim keeps it running).
		long := c.newID("long")
		mustCtr(t, c, c.runArgs(northstarRuntime, long, true, "sleep 600")...)
		seq := 0
		read := func(name string) string {
			seq++
			r := c.ctr(t, "task", "exec", "--exec-id", fmt.Sprintf("read%d", seq), long, "/bin/cat", "/run/northstar/"+name)
			return strings.TrimSpace(r.stdout)
		}
		old := read("secret")
		if old != e.secretHex(t) {
			t.Fatalf("the long-running container reads %q, the store holds %s", old, e.secretHex(t))
		}
		c.restart(t)
		c.readSecret(t, northstarRuntime) // the first start after the restart rotates
		new := e.secretHex(t)
		if new == old {
			t.Fatal("the containerd restart did not rotate")
		}
		t0 := time.Now()
		for read("secret") != new {
			if time.Since(t0) > 2*time.Second {
				t.Fatalf("2 s after the rotation the container started before the restart reads %q, want %s", read("secret"), new)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("the container started before the containerd restart read the new secret %v after the rotating start", time.Since(t0).Round(time.Millisecond))
		if got := read("secret.previous"); got != old {
			t.Errorf("secret.previous %q, want %s", got, old)
		}
		seq++
		r := c.ctr(t, "task", "exec", "--exec-id", fmt.Sprintf("write%d", seq), long, "/bin/sh", "-c", "touch /run/northstar/new 2>&1; echo x 2>&1 > /run/northstar/secret; true")
		if n := strings.Count(r.stdout+r.stderr, "Read-only file system"); n < 2 {
			t.Errorf("writes into /run/northstar after the rotation:\n%s", r)
		}
	})
}

// TestLiveRotationRuncUnderRootlesskit: runc itself under rootlesskit,
// the agent beside it.
func TestLiveRotationRuncUnderRootlesskit(t *testing.T) {
	a := requiresContainerd(t)
	sock := agentSocket(t, a)
	e := newEnv(t, fmt.Sprintf("[agent]\nsocket = %q\n", sock), a)
	c := startContainerd(t, a, "NORTHSTAR_CONFIG="+e.config) // for its namespaces
	startAgentIn(t, c, e, sock)
	r, old, new := throughRotation(t, e, func(script string) result {
		return newBundle(t, e.dir, false, script).withHook("createRuntime", e.config).runcIn(t, a, c)
	}, func() {
		rotate := exec.Command(bins.ctl, "rotate", "--config", e.config)
		a.apply(rotate)
		mustRun(t, rotate)
	})
	checkFollowed(t, "runc under rootlesskit", r, old, new)
}

// TestLiveRotationPlainRootlessRunc: plain rootless runc mounts the secret
// from inside the container, where the agent cannot reach: the container
// does not follow, and status says why.
func TestLiveRotationPlainRootlessRunc(t *testing.T) {
	requires(t, "runc")
	u := unprivileged(t)
	sock := agentSocket(t, u)
	e := newEnv(t, fmt.Sprintf("[agent]\nsocket = %q\n", sock), u)
	startAgentAs(t, u, e, sock)
	done := make(chan result, 1)
	go func() {
		b := newBundle(t, e.dir, true, "cat /run/northstar/secret; sleep 3").withHook("createRuntime", e.config).withHook("createContainer", e.config)
		done <- b.runcAs(t, u, false)
	}()
	time.Sleep(1500 * time.Millisecond)
	st := e.ctl(t, "status")
	if r := <-done; r.err != nil || r.stdout != e.secretHex(t) {
		t.Fatalf("the plain rootless container:\n%s", r)
	}
	if !strings.Contains(st.stdout, "cannot follow: "+registry.WhyHookMounts) {
		t.Errorf("status does not say why the plain rootless container cannot follow:\n%s", st)
	}
}

// TestLiveRotationPodman: rootful podman (the agent on the host) and
// rootless podman (the agent under podman unshare), with the hooks.d
// file: a running container follows northstarctl rotate.
func TestLiveRotationPodman(t *testing.T) {
	requires(t, "podman", "runc", "newuidmap", "newgidmap")
	for _, rootless := range []bool{false, true} {
		name := map[bool]string{false: "rootful", true: "rootless"}[rootless]
		t.Run(name, func(t *testing.T) {
			var a *account
			if rootless {
				a = unprivileged(t)
			}
			sock := agentSocket(t, a)
			e := newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n", sock), a)
			p := newTestPodman(t, a, e)
			if rootless {
				startPodmanAgent(t, p, e, sock)
			} else {
				startAgent(t, e, sock)
			}
			r, old, new := throughRotation(t, e, func(script string) result { return p.run(t, script) }, func() {
				rotate := exec.Command(bins.ctl, "rotate", "--config", e.config)
				if a != nil {
					a.apply(rotate)
				}
				mustRun(t, rotate)
			})
			checkFollowed(t, name+" podman", r, old, new)
		})
	}
}
