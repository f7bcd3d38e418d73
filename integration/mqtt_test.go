// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/internal/testtree"
)

// mqttPort is the broker's port inside rootlesskit's private network
// namespace (each test's containerd has its own, so no clash).
const mqttPort = "18830"

var mqttBroker = "127.0.0.1:" + mqttPort

// mqttBinaries builds the example broker and client (static) once per run
// into bins.dir, readable by the test user.
var mqttBinaries = sync.OnceValues(func() (string, error) {
	for _, name := range []string{"broker", "client"} {
		// examples/mqtt is a module of its own.
		if err := buildStatic("../examples/mqtt", "./"+name, filepath.Join(bins.dir, "mqtt-"+name)); err != nil {
			return "", err
		}
	}
	return bins.dir, nil
})

// exitCode is the exit status of a finished command, -1 when it did not
// run or was killed.
func exitCode(r result) int {
	if r.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// mqttStack is rootless containerd with the northstar shim, the TPM sealer
// on a swtpm owned by the test user, and a rootfs holding busybox, the
// broker and the client.
type mqttStack struct {
	auth string // how clients log in: "secret", "token" or "mtls"
	a    *account
	tpm  *swtpm
	e    *env
	c    *rootlessContainerd
	log  string // directory for the containers' stdout/stderr, owned by the user
}

func newMQTTStack(t *testing.T) *mqttStack { return newMQTTStackAuth(t, "secret") }

// newMQTTStackAuth is newMQTTStack whose MQTT broker and clients use auth;
// with "token" the agent (with [api] enable) runs in rootlesskit's
// namespaces, and with "mtls" it serves the SPIFFE Workload API too.
func newMQTTStackAuth(t *testing.T, auth string) *mqttStack {
	t.Helper()
	a := requiresContainerd(t)
	requires(t, "swtpm")
	dir, err := mqttBinaries()
	if err != nil {
		t.Fatal(err)
	}
	s := &mqttStack{a: a, auth: auth}
	s.tpm = newSWTPM(t, a)
	pcrs, sock := "[]", ""
	if auth == "token" || auth == "mtls" {
		sock = agentSocket(t, a)
		pcrs += fmt.Sprintf("\n[agent]\nsocket = %q\n[api]\nenable = true", sock)
	}
	if auth == "mtls" {
		pcrs += "\n[spiffe]\ntrust_domain = \"example.org\""
	}
	s.e = newTPMEnv(t, s.tpm, pcrs, a)
	s.c = startContainerd(t, a, "NORTHSTAR_CONFIG="+s.e.config)
	if sock != "" {
		startAgentIn(t, s.c, s.e, sock)
	}
	for _, name := range []string{"broker", "client"} {
		data, err := os.ReadFile(filepath.Join(dir, "mqtt-"+name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(s.c.rootfs, "bin", name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, int(a.uid), int(a.gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.log = filepath.Join(worldDir(t), "logs")
	if err := os.Mkdir(s.log, 0o755); err != nil {
		t.Fatal(err)
	}
	a.chownR(t, s.log)
	return s
}

// runArgs are `ctr run` arguments for a container of the northstar runtime
// in rootlesskit's network namespace (--net-host), with extra ctr flags.
func (s *mqttStack) runArgs(id string, detach bool, flags []string, cmd ...string) []string {
	args := []string{"run"}
	if detach {
		args = append(args, "-d", "--log-uri", "file://"+filepath.Join(s.log, id+".log"))
	} else {
		args = append(args, "--rm")
	}
	args = append(args, ctrRunFlags...)
	args = append(args, "--net-host", "--runtime", northstarRuntime)
	args = append(args, flags...)
	args = append(args, "--rootfs", s.c.rootfs, id)
	return append(args, cmd...)
}

// startBroker starts a broker container and waits until it answers.
func (s *mqttStack) startBroker(t *testing.T) string {
	t.Helper()
	id := s.c.newID("broker")
	flags := []string{"--annotation", "io.northstar.identity=broker"}
	mustCtr(t, s.c, s.runArgs(id, true, flags, "/bin/broker", "--auth", s.auth, "--listen", mqttBroker)...)
	// An outsider without a password is refused (exit 3) once the broker
	// listens; with mutual TLS, one without a certificate.
	probe, refusedBy := []string{"--no-password"}, func(r result) bool { return exitCode(r) == 3 }
	if s.auth == "mtls" {
		probe, refusedBy = []string{"--auth", "mtls", "--no-certificate"}, func(r result) bool { return strings.Contains(r.stderr, "certificate required") }
	}
	for i := 0; ; i++ {
		r := s.hostClient(t, append(probe, "--timeout", "1s")...)
		if refusedBy(r) {
			break
		}
		if i > 100 {
			log, _ := os.ReadFile(filepath.Join(s.log, id+".log"))
			t.Fatalf("broker %s never answered:\n%s\n--- broker log\n%s", id, r, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return id
}

// stopBroker sends SIGTERM to the broker and removes its container.
func (s *mqttStack) stopBroker(t *testing.T, id string) {
	t.Helper()
	mustCtr(t, s.c, "task", "kill", "--signal", "SIGTERM", id)
	for i := 0; ; i++ {
		ls := mustCtr(t, s.c, "task", "ls")
		stopped := false
		for _, l := range strings.Split(ls.stdout, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] == "STOPPED" {
				stopped = true
			}
		}
		if stopped {
			break
		}
		if i > 100 {
			t.Fatalf("broker %s does not stop:\n%s", id, ls)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustCtr(t, s.c, "task", "delete", id)
	mustCtr(t, s.c, "container", "rm", id)
}

// clientContainer runs the client in a container and returns what it did.
func (s *mqttStack) clientContainer(t *testing.T, flags []string, args ...string) result {
	t.Helper()
	cmd := append([]string{"/bin/client", "--auth", s.auth, "--broker", mqttBroker, "--timeout", "5s"}, args...)
	return s.c.ctr(t, s.runArgs(s.c.newID("client"), false, flags, cmd...)...)
}

// hostClient runs the client as a plain process of the test user inside
// rootlesskit's namespaces: an outsider on the broker's network, with no
// northstar secret.
func (s *mqttStack) hostClient(t *testing.T, args ...string) result {
	t.Helper()
	cmd := append([]string{"exec", s.c.dir, filepath.Join(bins.dir, "mqtt-client"), "--auth", "secret", "--broker", mqttBroker}, args...)
	return run(t, exec.Command(s.c.script, cmd...))
}

func wantExit(t *testing.T, what string, r result, code int, out string) {
	t.Helper()
	if got := exitCode(r); got != code || !strings.Contains(r.stdout+r.stderr, out) {
		t.Errorf("%s: exit %d, want %d with %q:\n%s", what, got, code, out, r)
	}
}

const (
	roundTrip = "client: authenticated, round trip ok"
	refused   = "client: refused by broker: Bad User Name or Password (0x86)"
)

// TestMQTTContainersAuthenticate: under rootless containerd with the
// northstar shim and the TPM sealer, a client container authenticates to a
// broker container with the lifecycle secret; outsiders are refused; the
// secret is on no disk, argv or environment; after a containerd restart a
// new client holds a new secret that the old broker refuses (the
// documented limit) and a restarted broker accepts.
func TestMQTTContainersAuthenticate(t *testing.T) {
	s := newMQTTStack(t)
	gen1 := s.e.record(t).Generation
	broker := s.startBroker(t)
	secret1 := s.e.secretHex(t)
	if rec := s.e.record(t); rec.Generation != gen1 || lifecyclePid(rec.LifecycleID) != s.c.pid(t) {
		t.Errorf("after the first container: generation %d lifecycle %q, want generation %d (init's secret) adopted by containerd pid %d",
			rec.Generation, rec.LifecycleID, gen1, s.c.pid(t))
	}

	// A container of the same lifecycle gets in with /run/northstar/secret.
	wantExit(t, "client container", s.clientContainer(t, nil), 0, roundTrip)

	// Outsiders: processes on the broker's network without the secret.
	wantExit(t, "outsider with a wrong password", s.hostClient(t, "--password", strings.Repeat("0", 64)), 3, refused)
	wantExit(t, "outsider without a password", s.hostClient(t, "--no-password"), 3, refused)
	// Containers of the northstar runtime that opted out of the secret.
	disabled := []string{"--annotation", "io.northstar.secret.disable=true"}
	wantExit(t, "container without a secret", s.clientContainer(t, disabled), 1, "client: read secret file")
	wantExit(t, "container without a secret, no password", s.clientContainer(t, disabled, "--no-password"), 3, refused)
	wantExit(t, "container without a secret, guessed password", s.clientContainer(t, disabled, "--password", "guess"), 3, refused)

	// While the broker runs: the secret is in no file of the state dir,
	// the TPM state, containerd's root, state (bundles) and logs, the
	// rootfs, the container logs, nor in any process's argv or environment.
	assertAbsent(t, secret1, s.e.cfg.StateDir, s.tpm.dir, s.c.dir, s.c.rootfs, s.log)
	assertAbsentFromProcs(t, secret1)
	blog, _ := os.ReadFile(filepath.Join(s.log, broker+".log"))
	for _, want := range []string{"broker: listening on " + mqttBroker, "broker: accepted client_id=", "broker: refused: bad password", "broker: refused: no password"} {
		if !bytes.Contains(blog, []byte(want)) {
			t.Errorf("broker log lacks %q:\n%s", want, blog)
		}
	}

	// containerd restarts: a new lifecycle. A new client holds the new
	// secret; the old broker still holds the old one and refuses it.
	_, newPid := s.c.restart(t)
	wantExit(t, "new client, old broker", s.clientContainer(t, nil), 3, refused)
	rec := s.e.record(t)
	if rec.Generation != gen1+1 || lifecyclePid(rec.LifecycleID) != newPid {
		t.Errorf("after the restart: generation %d lifecycle %q, want generation %d naming containerd pid %d",
			rec.Generation, rec.LifecycleID, gen1+1, newPid)
	}
	secret2 := s.e.secretHex(t)
	if secret2 == secret1 {
		t.Fatal("the secret did not change with the containerd restart")
	}
	// The restarted broker reads the new secret and lets the client in.
	s.stopBroker(t, broker)
	broker2 := s.startBroker(t)
	wantExit(t, "new client, restarted broker", s.clientContainer(t, nil), 0, roundTrip)
	if g := s.e.record(t).Generation; g != gen1+1 {
		t.Errorf("generation %d, want %d (one rotation per containerd restart)", g, gen1+1)
	}
	for _, secret := range []string{secret1, secret2} {
		assertAbsent(t, secret, s.e.cfg.StateDir, s.tpm.dir, s.c.dir, s.c.rootfs, s.log)
		assertAbsentFromProcs(t, secret)
	}
	s.stopBroker(t, broker2)
}

// assertAbsentFromProcs fails if the secret's hex or raw bytes are in the
// argv or environment of any process on the host.
func assertAbsentFromProcs(t *testing.T, secretHex string) {
	t.Helper()
	raw, _ := hex.DecodeString(secretHex)
	procs, _ := filepath.Glob("/proc/[0-9]*")
	n := 0
	for _, p := range procs {
		for _, f := range []string{"cmdline", "environ"} {
			data, err := os.ReadFile(filepath.Join(p, f))
			if err != nil {
				continue
			}
			n++
			if bytes.Contains(bytes.ToLower(data), []byte(secretHex)) || bytes.Contains(data, raw) {
				comm, _ := os.ReadFile(filepath.Join(p, "comm"))
				t.Errorf("%s/%s (%s) contains the secret", p, f, strings.TrimSpace(string(comm)))
			}
		}
	}
	if n == 0 {
		t.Error("read no process's cmdline or environ")
	}
}

// TestMQTTHostileImageRootless: under rootless containerd, images whose
// /run or /run/northstar lead to a host directory either do not start or
// get their secret inside their own rootfs; the host directory stays
// untouched. ctr's specs mount a tmpfs on /run, so the image's /run/northstar
// only shows when something is mounted over /run: the second case brings
// its /run as a bind mount (a volume the attacker filled).
func TestMQTTHostileImageRootless(t *testing.T) {
	s := newMQTTStack(t)
	// The first container starts the lifecycle (rotates): read the secret
	// after it.
	want := s.c.readSecret(t, northstarRuntime)
	if want != s.e.secretHex(t) {
		t.Fatal("a container read another secret than the store holds")
	}

	host := filepath.Join(worldDir(t), "host")
	if err := os.MkdirAll(host, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "victim"), []byte("host file"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.a.chownR(t, host) // writable by the runtime user: only the hook's care protects it
	before := testtree.Snapshot(host)

	t.Run("/run absolute symlink to a host dir", func(t *testing.T) {
		rootfs := filepath.Join(worldDir(t), "rootfs")
		mkBusybox(t, rootfs)
		if err := testtree.Build(rootfs, host, []string{"symlink run $HOST"}); err != nil {
			t.Fatal(err)
		}
		s.a.chownR(t, rootfs)
		args := []string{"run", "--rm"}
		args = append(args, ctrRunFlags...)
		args = append(args, "--runtime", northstarRuntime, "--rootfs", rootfs, s.c.newID("hostile"),
			"/bin/sh", "-c", `readlink /run; cat /run/northstar/secret; echo; grep " /run\| `+host+`" /proc/self/mountinfo`)
		r := s.c.ctr(t, args...)
		switch {
		case r.err != nil && strings.Contains(r.stderr, "northstar-hook: mount: "):
			t.Logf("refused: %s", strings.TrimSpace(r.stderr))
		case r.err != nil:
			t.Errorf("container failed, not refused by the hook:\n%s", r)
		default:
			t.Logf("the hook followed /run -> %s inside the rootfs: secret mounted there, in the container only", host)
			// The hook followed the image's symlink inside the rootfs: the
			// secret sits at rootfs/$HOST/northstar, seen only in the
			// container's mount namespace.
			lines := strings.Split(r.stdout, "\n")
			if len(lines) < 2 || lines[0] != host || lines[1] != want {
				t.Errorf("container saw /run -> %q and secret %q, want %s and the lifecycle secret:\n%s", lines[0], lines[1], host, r)
			}
			if !strings.Contains(r.stdout, " "+host+"/northstar ro,") {
				t.Errorf("no read-only secret mount at %s/northstar in the container:\n%s", host, r)
			}
		}
	})

	t.Run("/run/northstar absolute symlink to a host dir", func(t *testing.T) {
		runDir := filepath.Join(worldDir(t), "run")
		if err := testtree.Build(runDir, host, []string{"symlink northstar $HOST"}); err != nil {
			t.Fatal(err)
		}
		s.a.chownR(t, runDir)
		args := []string{"run", "--rm"}
		args = append(args, ctrRunFlags...)
		args = append(args, "--runtime", northstarRuntime,
			"--mount", "type=bind,src="+runDir+",dst=/run,options=rbind:rw",
			"--rootfs", s.c.rootfs, s.c.newID("hostile"), "/bin/sh", "-c", "echo STARTED; cat /run/northstar/secret")
		r := s.c.ctr(t, args...)
		if r.err == nil || strings.Contains(r.stdout, "STARTED") {
			t.Fatalf("container started, want the hook to refuse it:\n%s", r)
		}
		// A bind mount at /run is not the image's root filesystem nor a
		// tmpfs: the hook refuses it before it even looks at the symlink.
		if !strings.Contains(r.stderr, "northstar-hook: mount: refused mount target: /run/northstar resolves into") &&
			!strings.Contains(r.stderr, "northstar-hook: mount: refused mount target: /run resolves into") {
			t.Errorf("refusal does not come from the hook's mount-target check:\n%s", r)
		}
	})

	if after := testtree.Snapshot(host); after != before {
		t.Errorf("host directory changed:\nbefore:\n%safter:\n%s", before, after)
	}
	assertAbsent(t, want, host, s.e.cfg.StateDir, s.c.dir)
}

// TestMQTTTokens: the MQTT example with northstar tokens (--auth token):
// the client logs in as its identity with a token for the MQTT broker,
// which the MQTT broker verifies on its own API socket. Shown, in the demo's order:
// the client is accepted; an outsider is refused; a container holding the
// same lifecycle secret file but another identity cannot log in as the
// client (the attack the shared secret cannot stop); a captured token is
// refused the second time; after a containerd restart the old broker,
// not restarted, accepts the new client; the audit log verifies.
func TestMQTTTokens(t *testing.T) {
	s := newMQTTStackAuth(t, "token")
	as := func(identity string) []string { return []string{"--annotation", "io.northstar.identity=" + identity} }
	broker := s.startBroker(t)
	gen := s.e.record(t).Generation

	wantExit(t, "client with a token", s.clientContainer(t, as("client")), 0, roundTrip)
	wantExit(t, "outsider without a password", s.hostClient(t, "--no-password"), 3, refused)
	wantExit(t, "outsider with the wrong kind of password", s.hostClient(t, "--username", "client", "--password", strings.Repeat("0", 64)), 3, refused)
	// mallory has the same /run/northstar/secret; as "client" it is refused.
	wantExit(t, "another identity logging in as the client", s.clientContainer(t, as("mallory"), "--username", "client"), 3, refused)
	wantExit(t, "a token replayed", s.clientContainer(t, as("client"), "--replay"), 0, "client: the replayed token was refused")

	_, newPid := s.c.restart(t)
	wantExit(t, "new client, old broker (not restarted)", s.clientContainer(t, as("client")), 0, roundTrip)
	if rec := s.e.record(t); rec.Generation != gen+1 || lifecyclePid(rec.LifecycleID) != newPid {
		t.Errorf("after the restart: generation %d lifecycle %q, want %d naming containerd %d", rec.Generation, rec.LifecycleID, gen+1, newPid)
	}

	blog, _ := os.ReadFile(filepath.Join(s.log, broker+".log"))
	for _, want := range []string{`accepted client_id=`, `refused: token wrong-sender client_id=`, `refused: token replayed client_id=`} {
		if !bytes.Contains(blog, []byte(want)) {
			t.Errorf("broker log lacks %q:\n%s", want, blog)
		}
	}
	verify := exec.Command(bins.ctl, "audit", "verify", "--config", s.e.config)
	s.a.apply(verify)
	if r := run(t, verify); r.err != nil || !strings.Contains(r.stdout, "chain and MACs intact") {
		t.Errorf("audit verify of the log this test produced:\n%s", r)
	}
}

// TestMQTTMTLS: the MQTT example with --auth mtls under rootless
// containerd through the northstar shim, which tells every API container
// where its Workload API is (SPIFFE_ENDPOINT_SOCKET): the client logs in
// with its X.509-SVID; mallory, with an SVID of its own, cannot log in as
// the client; an outsider without a certificate is refused.
func TestMQTTMTLS(t *testing.T) {
	s := newMQTTStackAuth(t, "mtls")
	as := func(identity string) []string { return []string{"--annotation", "io.northstar.identity=" + identity} }
	broker := s.startBroker(t)

	env := s.c.ctr(t, s.runArgs(s.c.newID("env"), false, as("client"), "/bin/sh", "-c", "echo $SPIFFE_ENDPOINT_SOCKET")...)
	if strings.TrimSpace(env.stdout) != "unix:///run/northstar/api/spiffe.sock" {
		t.Errorf("SPIFFE_ENDPOINT_SOCKET in a container through the shim:\n%s", env)
	}
	off := s.c.ctr(t, s.runArgs(s.c.newID("env"), false, append(as("client"), "--annotation", "io.northstar.api.disable=true"),
		"/bin/sh", "-c", "echo \"[$SPIFFE_ENDPOINT_SOCKET]\"")...)
	if strings.TrimSpace(off.stdout) != "[]" {
		t.Errorf("SPIFFE_ENDPOINT_SOCKET in a container without the API:\n%s", off)
	}

	wantExit(t, "client with its SVID", s.clientContainer(t, as("client")), 0, roundTrip)
	wantExit(t, "mallory logging in as the client", s.clientContainer(t, as("mallory"), "--username", "client"), 3, refused)
	wantExit(t, "outsider without a certificate", s.hostClient(t, "--auth", "mtls", "--no-certificate"), 1, "certificate required")

	blog, _ := os.ReadFile(filepath.Join(s.log, broker+".log"))
	for _, want := range []string{"(mutual TLS as spiffe://example.org/broker)",
		`accepted client_id=`, `username="client" spiffe_id="spiffe://example.org/client"`,
		`refused: the certificate is not the username's`, `spiffe_id="spiffe://example.org/mallory"`,
		`refused: TLS handshake: "tls: client didn't provide a certificate"`} {
		if !bytes.Contains(blog, []byte(want)) {
			t.Errorf("broker log lacks %q:\n%s", want, blog)
		}
	}
}
