// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/ctl"
)

// The SPIRE fleet of these tests (DESIGN.md §16): one spire-server on its
// default SQLite datastore, and two "hosts", network namespaces joined by
// a bridge in the server's, each with its own swtpm, state directory,
// northstar agent ([spiffe] issuer = "spire"), SPIRE agent (joined by
// join_token) and runc containers in its network namespace.
const (
	spireTD       = "fleet.test"
	spireVersion  = "v1.13.3"
	spireNet      = "10.26.0."
	spireServerIP = spireNet + "1"
)

// spireServerBinary is SPIRE's server as scripts/install-tools.sh builds
// it (with cgo, for SQLite).
func spireServerBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(toolsDir(), "spire-server-"+spireVersion, "spire-server")
	requiresFile(t, p, "scripts/install-tools.sh spire-server builds it")
	return p
}

type spireFleet struct {
	dir        string
	server     string // the spire-server binary
	agent      string // the spire-agent binary
	serverSock string // the server's API socket, for its CLI
	netns      []string
	hosts      map[string]*spireHost
}

// spireHost is one host of the fleet.
type spireHost struct {
	name   string
	netns  string // /run/netns/<name>
	ip     string
	dir    string
	public string // the SPIRE agent's Workload API socket
	admin  string // its admin socket, the northstar agent's way in
	conf   string
	spire  *exec.Cmd
	log    string // the SPIRE agent's log file
	e      *env
	ns     *agentProc
	sock   string // the northstar agent's socket
}

// newSPIREFleet starts the server and hosts "a" and "b" with everything
// on them; entries must be written (f.entry) before f.startHosts.
func newSPIREFleet(t *testing.T) *spireFleet {
	t.Helper()
	requires(t, "runc", "swtpm", "ip", "nsenter")
	f := &spireFleet{dir: worldDir(t), server: spireServerBinary(t), agent: spireAgentBinary(t), hosts: map[string]*spireHost{}}
	tag := fmt.Sprintf("ns26-%d", os.Getpid())
	srvNS := tag + "-s"
	f.ip(t, "netns", "add", srvNS)
	f.ip(t, "-n", srvNS, "link", "add", "br0", "type", "bridge")
	f.ip(t, "-n", srvNS, "addr", "add", spireServerIP+"/24", "dev", "br0")
	f.ip(t, "-n", srvNS, "link", "set", "br0", "up")
	f.ip(t, "-n", srvNS, "link", "set", "lo", "up")
	for i, name := range []string{"a", "b"} {
		h := &spireHost{name: name, netns: "/run/netns/" + tag + "-" + name, ip: spireNet + fmt.Sprint(i+2), dir: filepath.Join(f.dir, name)}
		ns := filepath.Base(h.netns)
		f.ip(t, "netns", "add", ns)
		f.ip(t, "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p"+name, "netns", srvNS)
		f.ip(t, "-n", srvNS, "link", "set", "p"+name, "master", "br0")
		f.ip(t, "-n", srvNS, "link", "set", "p"+name, "up")
		f.ip(t, "-n", ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		f.ip(t, "-n", ns, "link", "set", "eth0", "up")
		f.ip(t, "-n", ns, "link", "set", "lo", "up")
		f.hosts[name] = h
	}

	sdir := filepath.Join(f.dir, "server")
	f.serverSock = filepath.Join(sdir, "api.sock")
	noErr(t, os.MkdirAll(filepath.Join(sdir, "data"), 0o700))
	conf := filepath.Join(sdir, "server.conf")
	noErr(t, os.WriteFile(conf, fmt.Appendf(nil, `server {
  bind_address = %q
  bind_port = "8081"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`, spireServerIP, f.serverSock, spireTD, filepath.Join(sdir, "data"), filepath.Join(sdir, "data", "datastore.sqlite3")), 0o600))
	slog := filepath.Join(sdir, "spire-server.log")
	logf, err := os.Create(slog)
	noErr(t, err)
	defer logf.Close()
	srv := exec.Command("nsenter", "--net=/run/netns/"+srvNS, f.server, "run", "-config", conf)
	srv.Stdout, srv.Stderr = logf, logf
	noErr(t, srv.Start())
	t.Cleanup(func() {
		stopProc(srv)
		if t.Failed() {
			t.Logf("spire-server log:\n%s", fleetTail(readLog(slog), 60))
		}
	})
	fleetWait(t, 60*time.Second, "spire-server healthy", func() (bool, string) {
		r := run(t, exec.Command(f.server, "healthcheck", "-socketPath", f.serverSock))
		return r.err == nil, r.String() + "\n" + fleetTail(readLog(slog), 20)
	})

	// The northstar agent of each host is its SPIRE agent's delegate: an
	// entry for root's processes on that node, whose ID the SPIRE agent
	// lists in authorized_delegates.
	for _, h := range f.hosts {
		f.entry(t, h.name, "northstar-agent/"+h.name, "unix:uid:0")
	}
	return f
}

// startHosts joins each host's SPIRE agent by a join token and starts it,
// then its northstar agent.
func (f *spireFleet) startHosts(t *testing.T) {
	t.Helper()
	for _, h := range f.hosts {
		out := mustRun(t, exec.Command(f.server, "token", "generate", "-socketPath", f.serverSock, "-spiffeID", f.nodeID(h.name))).stdout
		m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("token generate printed:\n%s", out)
		}
		h.public = filepath.Join(h.dir, "public", "api.sock")
		h.admin = filepath.Join(h.dir, "admin", "admin.sock")
		for _, d := range []string{"data", "public", "admin"} {
			noErr(t, os.MkdirAll(filepath.Join(h.dir, d), 0o755))
		}
		h.conf = filepath.Join(h.dir, "agent.conf")
		noErr(t, os.WriteFile(h.conf, fmt.Appendf(nil, `agent {
  data_dir = %q
  log_level = "DEBUG"
  server_address = %q
  server_port = "8081"
  socket_path = %q
  admin_socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
  join_token = %q
  authorized_delegates = ["spiffe://%s/northstar-agent/%s"]
  experimental {
    sync_interval = "1s"
  }
}
plugins {
  KeyManager "disk" {
    plugin_data {
      directory = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(h.dir, "data"), spireServerIP, h.public, h.admin, spireTD, m[1], spireTD, h.name, filepath.Join(h.dir, "data")), 0o600))
		f.startSPIREAgent(t, h)
		t.Cleanup(func() {
			stopProc(h.spire)
			if t.Failed() {
				t.Logf("spire-agent %s log:\n%s", h.name, fleetTail(readLog(h.log), 60))
			}
		})

		tpm := newSWTPM(t, nil)
		h.sock = agentSocket(t, nil)
		h.e = newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n[api]\nenable = true\n"+
			"[spiffe]\ntrust_domain = %q\nissuer = \"spire\"\n[spire]\nadmin_socket = %q\n", tpm.path(), h.sock, spireTD, h.admin), nil)
		h.ns = startAgentCmd(t, exec.Command("nsenter", "--net="+h.netns, bins.ctl, "agent", "--config", h.e.config), h.sock)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("northstar agent %s output:\n%s", h.name, fleetTail(h.ns.out.String(), 60))
			}
		})
	}
	for _, h := range f.hosts {
		f.waitDelegate(t, h)
	}
}

// startSPIREAgent starts (or restarts) h's SPIRE agent and waits until it
// is healthy.
func (f *spireFleet) startSPIREAgent(t *testing.T, h *spireHost) {
	t.Helper()
	h.log = filepath.Join(h.dir, "spire-agent.log")
	logf, err := os.OpenFile(h.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	noErr(t, err)
	defer logf.Close()
	h.spire = exec.Command("nsenter", "--net="+h.netns, f.agent, "run", "-config", h.conf)
	h.spire.Stdout, h.spire.Stderr = logf, logf
	noErr(t, h.spire.Start())
	fleetWait(t, 60*time.Second, "spire-agent "+h.name+" healthy", func() (bool, string) {
		r := run(t, exec.Command(f.agent, "healthcheck", "-socketPath", h.public))
		return r.err == nil, r.String() + "\n" + fleetTail(readLog(h.log), 20)
	})
}

// waitDelegate waits until h's northstar agent reports that its SPIRE
// agent answers it as an authorized delegate.
func (f *spireFleet) waitDelegate(t *testing.T, h *spireHost) {
	t.Helper()
	fleetWait(t, 60*time.Second, "host "+h.name+": the SPIRE agent takes the northstar agent as a delegate", func() (bool, string) {
		st := spireStatus(t, h.e)
		return st.SPIRE != nil && st.SPIRE.Answers && st.SPIRE.Delegate, fmt.Sprintf("%+v", st.SPIRE)
	})
}

func (f *spireFleet) nodeID(host string) string { return "spiffe://" + spireTD + "/host/" + host }

// entry writes a registration entry for SPIFFE ID path under host's node
// and returns its id.
func (f *spireFleet) entry(t *testing.T, host, path string, selectors ...string) string {
	t.Helper()
	args := []string{"entry", "create", "-socketPath", f.serverSock, "-parentID", f.nodeID(host), "-spiffeID", "spiffe://" + spireTD + "/" + path}
	for _, s := range selectors {
		args = append(args, "-selector", s)
	}
	out := mustRun(t, exec.Command(f.server, args...)).stdout
	m := regexp.MustCompile(`Entry ID\s*:\s*(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("entry create printed:\n%s", out)
	}
	return m[1]
}

func (f *spireFleet) ip(t *testing.T, args ...string) {
	t.Helper()
	mustRun(t, exec.Command("ip", args...))
	if args[0] == "netns" && args[1] == "add" {
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", args[2]).Run() })
	}
}

// bundle is a container of h: identity's, with nsspiffe, in h's network
// namespace.
func (h *spireHost) bundle(t *testing.T, identity, script string) *bundle {
	t.Helper()
	b := spiffeBundle(t, h.e, identity, script)
	for i, n := range b.spec.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			b.spec.Linux.Namespaces[i].Path = h.netns
		}
	}
	b.spec.Root.Readonly = false
	return b
}

// streaming starts a container of identity on h that opens a
// FetchX509SVID stream again and again, and logs what each sends to
// /tmp/out; it returns the container's id and that file.
func (h *spireHost) streaming(t *testing.T, identity string) (string, string) {
	t.Helper()
	b := h.bundle(t, identity, "while :; do nsspiffe stream >>/tmp/out 2>&1; sleep 0.2; done")
	id := startDetached(t, h.e, b)
	return id, filepath.Join(b.rootfs, "tmp", "out")
}

// spireStatus is `northstarctl status --json` of e.
func spireStatus(t *testing.T, e *env) ctl.Status {
	t.Helper()
	r := e.ctl(t, "status", "--json")
	var st ctl.Status
	if r.err != nil || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("status:\n%s", r)
	}
	return st
}

// containerStatus is the status of container id, once ok accepts it.
func containerStatus(t *testing.T, e *env, id string, what string, ok func(ctl.Container) bool) ctl.Container {
	t.Helper()
	var got ctl.Container
	fleetWait(t, 30*time.Second, what, func() (bool, string) {
		for _, c := range spireStatus(t, e).Containers {
			if c.ID == id {
				got = c
				return ok(c), fmt.Sprintf("%+v spire %+v", c, c.SPIRE)
			}
		}
		return false, "not listed"
	})
	return got
}

// waitContains waits until file p holds want.
func waitContains(t *testing.T, p, want string, timeout time.Duration) string {
	t.Helper()
	var data []byte
	fleetWait(t, timeout, fmt.Sprintf("%s holds %q", p, want), func() (bool, string) {
		data, _ = os.ReadFile(p)
		return bytes.Contains(data, []byte(want)), fleetTail(string(data), 10)
	})
	return string(data)
}

// waitFor polls cond until it holds, failing after timeout with what and
// cond's last word.
func fleetWait(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still not: %s\nlast: %s", timeout, what, last)
		}
	}
}

func stopProc(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func fleetTail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readLog is the log file p as it is now.
func readLog(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSPIREAcrossHosts: containers on two hosts share SPIRE's trust
// domain through their agents' delegation (DESIGN.md §16).
func TestSPIREAcrossHosts(t *testing.T) {
	f := newSPIREFleet(t)
	f.entry(t, "a", "client", "northstar:identity:client")
	f.entry(t, "a", "mallory", "northstar:identity:mallory")
	doomed := f.entry(t, "a", "doomed", "northstar:identity:doomed")
	f.entry(t, "b", "broker", "northstar:identity:broker")
	// A workload of plain SPIRE on host b: uid 1000, attested by the SPIRE
	// agent's unix attestor, no northstar.
	f.entry(t, "b", "plain", "unix:uid:1000")
	// The broker's entry is parented to host b: host a's agent cannot get
	// it, whatever its containers claim.
	f.startHosts(t)
	a, b := f.hosts["a"], f.hosts["b"]
	dir, err := mqttBinaries()
	if err != nil {
		t.Fatal(err)
	}
	broker := spireTD + "/broker"

	t.Run("MQTTMutualTLSAcrossHosts", func(t *testing.T) {
		addr := b.ip + ":" + mqttPort
		bb := b.bundle(t, "broker", "broker --auth mtls --listen "+addr+" >/tmp/out 2>&1").withBinary(t, filepath.Join(dir, "mqtt-broker"), "broker")
		startDetached(t, b.e, bb)
		waitContains(t, filepath.Join(bb.rootfs, "tmp", "out"), "mutual TLS as spiffe://"+broker, 60*time.Second)
		client := func(identity string, args ...string) result {
			cmd := "client --auth mtls --broker " + addr + " --timeout 20s " + strings.Join(args, " ")
			return a.bundle(t, identity, cmd).withBinary(t, filepath.Join(dir, "mqtt-client"), "client").runcRun(t)
		}
		wantExit(t, "the client on host a, with SPIRE's SVID", client("client"), 0, roundTrip)
		wantExit(t, "mallory on host a logging in as the client", client("mallory", "--username", "client"), 3, refused)
		// A container on host a claiming the broker's identity gets no
		// SVID: the broker's entry is host b's.
		if r := a.bundle(t, "broker", "nsspiffe stream").runcRun(t); !strings.Contains(r.stdout, "end PermissionDenied: no identity issued") {
			t.Errorf("a container on host a of the broker's identity:\n%s", r)
		}
		blog, _ := os.ReadFile(filepath.Join(bb.rootfs, "tmp", "out"))
		for _, want := range []string{`accepted client_id=`, `username="client" spiffe_id="spiffe://` + spireTD + `/client"`,
			`refused: the certificate is not the username's`, `spiffe_id="spiffe://` + spireTD + `/mallory"`} {
			if !bytes.Contains(blog, []byte(want)) {
				t.Errorf("broker log lacks %q:\n%s", want, blog)
			}
		}
	})

	t.Run("PlainSPIREWorkloadAndContainer", func(t *testing.T) {
		addr := a.ip + ":18443"
		sb := a.bundle(t, "client", "nsspiffe tls-server "+addr+" spiffe://"+spireTD+"/plain >/tmp/out 2>&1")
		startDetached(t, a.e, sb)
		waitContains(t, filepath.Join(sb.rootfs, "tmp", "out"), "listening on", 60*time.Second)
		bin, err := nsspiffeBinary()
		if err != nil {
			t.Fatal(err)
		}
		// The plain workload asks host b's SPIRE agent itself.
		plain := exec.Command("nsenter", "--net="+b.netns, "--setuid", "1000", "--setgid", "1000", bin, "tls-client", addr, "spiffe://"+spireTD+"/client")
		plain.Env = append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET=unix://"+b.public)
		if r := run(t, plain); r.err != nil || strings.TrimSpace(r.stdout) != "hello spiffe://"+spireTD+"/plain" {
			t.Errorf("plain SPIRE workload on host b to the northstar container on host a:\n%s", r)
		}
	})

	t.Run("JWTAcrossHosts", func(t *testing.T) {
		// A JWT-SVID of the client on host a (checked there against SPIRE's
		// JWT bundle), validated by the broker's ValidateJWTSVID on host b.
		r := a.bundle(t, "client", "nsspiffe jwt broker").runcRun(t)
		token := strings.TrimSpace(r.stdout)
		if r.err != nil || strings.Count(token, ".") != 2 {
			t.Fatalf("jwt on host a:\n%s", r)
		}
		if r := b.bundle(t, "broker", "nsspiffe validate "+token+" broker").runcRun(t); r.err != nil ||
			strings.TrimSpace(r.stdout) != "spiffe://"+spireTD+"/client" {
			t.Errorf("validate on host b:\n%s", r)
		}
		if r := b.bundle(t, "broker", "nsspiffe validate "+token+" other").runcRun(t); r.err == nil {
			t.Errorf("validate for another audience:\n%s", r)
		}
	})

	t.Run("BoundsHold", func(t *testing.T) {
		// SPIRE agent a's log names every subscription with its selectors.
		subscriptions := func() int {
			n := 0
			for _, l := range strings.Split(readLog(a.log), "\n") {
				if strings.Contains(l, "Subscribing to cache changes") && strings.Contains(l, "identity:mallory") {
					n++
				}
			}
			return n
		}
		before := subscriptions()
		fb := a.bundle(t, "mallory", "nsspiffe x509 >/dev/null && nsspiffe streams 20 4 >/tmp/out 2>&1; sleep 600")
		startDetached(t, a.e, fb)
		// While mallory holds every stream its socket allows, the client's
		// first SVID comes as ever.
		if r := a.bundle(t, "client", "nsspiffe x509").runcRun(t); r.err != nil || !strings.HasPrefix(r.stdout, "spiffe://"+spireTD+"/client ") {
			t.Errorf("the client next to mallory's flood:\n%s", r)
		}
		got := waitContains(t, filepath.Join(fb.rootfs, "tmp", "out"), "ok ", 60*time.Second)
		if !strings.Contains(got, "ok 16") || !strings.Contains(got, "ResourceExhausted 4") {
			t.Errorf("20 streams on one socket of the SPIRE issuer: %s (want 16 served, 4 ResourceExhausted)", got)
		}
		// 1 + 20 streams on the container's socket, one subscription to SPIRE.
		if after := subscriptions(); after != before+1 {
			t.Errorf("SPIRE subscriptions for mallory: %d before the flood container, %d after, want one more", before, after)
		}
	})

	t.Run("NoMatchingEntry", func(t *testing.T) {
		id, out := a.streaming(t, "stranger")
		waitContains(t, out, "end PermissionDenied: no identity issued", 60*time.Second)
		c := containerStatus(t, a.e, id, "status says SPIRE answered no SVID", func(c ctl.Container) bool {
			return c.SPIRE != nil && c.SPIRE.Answered && len(c.SPIRE.SPIFFEIDs) == 0
		})
		if !strings.Contains(c.SPIRE.Why, "no SPIRE entry") || !strings.Contains(strings.Join(c.SPIRE.Selectors, " "), "northstar:identity:stranger") {
			t.Errorf("status of a container no entry matches: %+v", c.SPIRE)
		}
		if r := a.e.ctl(t, "status"); !strings.Contains(r.stdout, "answered, no SVID: no SPIRE entry") {
			t.Errorf("status:\n%s", r)
		}
	})

	t.Run("EntryDeletedEndsUpdates", func(t *testing.T) {
		id, out := a.streaming(t, "doomed")
		waitContains(t, out, "svid spiffe://"+spireTD+"/doomed", 60*time.Second)
		mustRun(t, exec.Command(f.server, "entry", "delete", "-socketPath", f.serverSock, "-entryID", doomed))
		waitContains(t, out, "end PermissionDenied: no identity issued", 60*time.Second)
		// Nothing after the deletion names the entry's SPIFFE ID again.
		time.Sleep(2 * time.Second)
		got := mustRead(t, out)
		if after := got[strings.Index(got, "end PermissionDenied"):]; strings.Contains(after, "svid ") {
			t.Errorf("updates after the entry was deleted:\n%s", got)
		}
		containerStatus(t, a.e, id, "status says no SVID", func(c ctl.Container) bool {
			return c.SPIRE != nil && c.SPIRE.Answered && len(c.SPIRE.SPIFFEIDs) == 0
		})
	})

	t.Run("RevokeClosesStreams", func(t *testing.T) {
		id, out := a.streaming(t, "client")
		waitContains(t, out, "svid spiffe://"+spireTD+"/client", 60*time.Second)
		if r := a.e.ctl(t, "rotate", "--revoke", id); r.err != nil {
			t.Fatalf("rotate --revoke:\n%s", r)
		}
		waitContains(t, out, "end Unavailable", 30*time.Second)
		c := containerStatus(t, a.e, id, "status says the SPIRE stream is closed", func(c ctl.Container) bool {
			return c.Revoked && c.SPIRE != nil && strings.Contains(c.SPIRE.Why, "closed")
		})
		if len(c.SPIRE.SPIFFEIDs) != 0 || c.SPIRE.Answered {
			t.Errorf("revoked container's SPIRE status: %+v", c.SPIRE)
		}
	})

	t.Run("SPIREAgentDown", func(t *testing.T) {
		stopProc(a.spire)
		start := time.Now()
		id, out := a.streaming(t, "client")
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("a container start with SPIRE down took %s", d)
		}
		waitContains(t, out, "end Unavailable", 30*time.Second)
		if strings.Contains(mustRead(t, out), "svid ") {
			t.Errorf("an SVID with SPIRE down:\n%s", mustRead(t, out))
		}
		containerStatus(t, a.e, id, "status says SPIRE does not answer", func(c ctl.Container) bool {
			return c.SPIRE != nil && !c.SPIRE.Answered && len(c.SPIRE.SPIFFEIDs) == 0
		})
		if r := a.e.ctl(t, "doctor"); r.err == nil || !strings.Contains(r.stdout, "does not answer") {
			t.Errorf("doctor with SPIRE down:\n%s", r)
		}
		f.startSPIREAgent(t, a)
		waitContains(t, out, "svid spiffe://"+spireTD+"/client", 60*time.Second)
		f.waitDelegate(t, a)
		containerStatus(t, a.e, id, "status says SPIRE answered again", func(c ctl.Container) bool {
			return c.SPIRE != nil && c.SPIRE.Answered && slices.Equal(c.SPIRE.SPIFFEIDs, []string{"spiffe://" + spireTD + "/client"})
		})
		if r := a.e.ctl(t, "doctor"); !strings.Contains(r.stdout, "takes this process as an authorized delegate") ||
			!strings.Contains(r.stdout, "SPIRE issued [spiffe://"+spireTD+"/client]") {
			t.Errorf("doctor with SPIRE back:\n%s", r)
		}
	})
}
