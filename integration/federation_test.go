// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fedHost is one "host" of TestFederation: a network namespace with its
// own swtpm (with an EK certificate from a CA of its own), agent and
// trust domain.
type fedHost struct {
	name, ns, addr, td string
	tpm                *swtpm
	ekCA, ek           string // PEM files: its TPM maker's CA, its EK certificate
	e                  *env
	sock               string
	agent              *agentProc
}

// fedRefresh is the bundles' refresh hint in the test: peers are checked
// again every 80 % of it.
const fedRefresh = 2 * time.Second

// netns makes a network namespace of this test (deleted at cleanup).
func netns(t *testing.T, name string) string {
	t.Helper()
	ns := fmt.Sprintf("nsfed%d-%s", os.Getpid(), name)
	mustRun(t, exec.Command("ip", "netns", "add", ns))
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	mustRun(t, exec.Command("ip", "-n", ns, "link", "set", "lo", "up"))
	return ns
}

// inNetns is a command run in network namespace ns only: the agent
// serves only callers of its own mount namespace (agent/control), which
// `ip netns exec` would change.
func inNetns(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--", name}, args...)...)
}

// newFedHosts makes hosts on one bridge, in a namespace of its own:
// 10.27.0.1, .2, ... inside those namespaces only.
func newFedHosts(t *testing.T, names ...string) []*fedHost {
	t.Helper()
	sw := netns(t, "sw")
	mustRun(t, exec.Command("ip", "-n", sw, "link", "add", "br0", "type", "bridge"))
	mustRun(t, exec.Command("ip", "-n", sw, "link", "set", "br0", "up"))
	var hosts []*fedHost
	for i, name := range names {
		h := &fedHost{name: name, ns: netns(t, name), addr: fmt.Sprintf("10.27.0.%d", i+1), td: name + ".test"}
		port := fmt.Sprintf("v%d", i)
		mustRun(t, exec.Command("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns))
		mustRun(t, exec.Command("ip", "-n", sw, "link", "set", port, "master", "br0", "up"))
		mustRun(t, exec.Command("ip", "-n", h.ns, "addr", "add", h.addr+"/24", "dev", "eth0"))
		mustRun(t, exec.Command("ip", "-n", h.ns, "link", "set", "eth0", "up"))
		h.tpm, h.ekCA = newSWTPMWithEK(t)
		h.e, h.sock = newAgentTPMEnv(t, h.tpm, fmt.Sprintf("[api]\nenable = true\n[spiffe]\ntrust_domain = %q\nroot = \"tpm\"\nca_ttl = \"3h\"\n", h.td))
		// The first attestation makes the AK and the root, and shows the EK.
		r := h.e.ctl(t, "attest", "--nonce", randomHex(t, 32))
		if r.err != nil {
			t.Fatalf("attest on %s:\n%s", name, r)
		}
		var ev struct {
			EK []byte `json:"ek_certificate"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &ev); err != nil {
			t.Fatal(err)
		}
		h.ek = filepath.Join(h.e.dir, "ek.pem")
		writeFile(t, h.ek, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ev.EK})))
		hosts = append(hosts, h)
	}
	return hosts
}

// peerOf is h's [[federation.peer]] entry in another host's config, its
// EK pinned to the one in ek (h's own unless told otherwise).
func (h *fedHost) peerOf(ek string, pcrs ...string) string {
	q := make([]string, len(pcrs))
	for i, p := range pcrs {
		q[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("[[federation.peer]]\ntrust_domain = %q\nbundle_url = \"https://%s:8443/bundle\"\nek_ca = %q\nek = %q\npcrs = [%s]\n",
		h.td, h.addr, h.ekCA, ek, strings.Join(q, ", "))
}

// start appends the federation settings to h's config and starts its
// agent in its namespace.
func (h *fedHost) start(t *testing.T, peers ...string) {
	t.Helper()
	f, err := os.OpenFile(h.e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "[federation]\nenable = true\nlisten = \"%s:8443\"\nrefresh_hint = %q\ntimeout = \"5s\"\n%s",
		h.addr, fedRefresh, strings.Join(peers, ""))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.agent = startAgentCmd(t, inNetns(h.ns, bins.ctl, "agent", "--config", h.e.config), h.sock)
}

// peers reads `northstarctl status --json`'s federation peers of h.
func (h *fedHost) peers(t *testing.T) map[string]peerState {
	t.Helper()
	r := h.e.ctl(t, "status", "--json")
	if r.err != nil {
		t.Fatalf("status on %s:\n%s", h.name, r)
	}
	var s struct {
		Peers []peerState `json:"federation_peers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status --json on %s: %v", h.name, err)
	}
	m := map[string]peerState{}
	for _, p := range s.Peers {
		m[p.TrustDomain] = p
	}
	return m
}

type peerState struct {
	TrustDomain string `json:"trust_domain"`
	Trusted     bool   `json:"trusted"`
	Reason      string `json:"reason"`
}

// waitPeer waits until h's agent holds td trusted (or not), and returns
// the peer's state.
func (h *fedHost) waitPeer(t *testing.T, td string, trusted bool, timeout time.Duration) peerState {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		p, ok := h.peers(t)[td]
		if ok && p.Trusted == trusted {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: peer %s is %+v after %s, want trusted=%v; the agent's output:\n%s", h.name, td, p, timeout, trusted, h.agent.out)
		}
	}
}

// mqttClient runs the example MQTT client (go-spiffe mutual TLS) in a
// container of identity "client" on h, logging in to the broker on b as
// its whole SPIFFE ID (a client of another trust domain).
func (h *fedHost) mqttClient(t *testing.T, b *fedHost) result {
	t.Helper()
	dir, err := mqttBinaries()
	if err != nil {
		t.Fatal(err)
	}
	bd := spiffeBundle(t, h.e, "client", fmt.Sprintf("client --auth mtls --broker %s:1883 --audience spiffe://%s/broker --username spiffe://%s/client --timeout 5s",
		b.addr, b.td, h.td)).withBinary(t, filepath.Join(dir, "mqtt-client"), "client").hostNetwork()
	return run(t, h.runc(t, bd, "run"))
}

// mqttLogin is one MQTT round trip of h's client to b's broker, which
// must succeed. (The example broker's "malformed packet" drops seen here
// before were paho's pinger writing inside another packet over TLS, fixed
// in the example's client with packets.NewThreadSafeConn: no retry.)
func (h *fedHost) mqttLogin(t *testing.T, b *fedHost, blog string) {
	t.Helper()
	if r := h.mqttClient(t, b); r.err != nil {
		l, _ := os.ReadFile(blog)
		t.Fatalf("%s's MQTT client to %s's broker through federation:\n%s\n--- broker log\n%s", h.name, b.name, r, l)
	}
}

// runc is `runc run` of b in h's network namespace, the container
// deleted at cleanup.
func (h *fedHost) runc(t *testing.T, b *bundle, args ...string) *exec.Cmd {
	t.Helper()
	b.write(t)
	root := filepath.Join(h.e.dir, "runc-root")
	id := fmt.Sprintf("ns-fed-%d-%d", os.Getpid(), containerSeq.Add(1))
	t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
	return inNetns(h.ns, "runc", append(append([]string{"--root", root}, args...), "--bundle", b.dir, id)...)
}

// mqttBroker starts the example MQTT broker with mutual TLS in a container
// of identity "broker" on h, letting in clients of the federated trust
// domains too; it returns the path of the broker's log.
func (h *fedHost) mqttBroker(t *testing.T, federated ...string) string {
	t.Helper()
	dir, err := mqttBinaries()
	if err != nil {
		t.Fatal(err)
	}
	b := spiffeBundle(t, h.e, "broker", "broker --auth mtls --listen 0.0.0.0:1883 --federated "+strings.Join(federated, ",")+" >/tmp/broker.log 2>&1").
		withBinary(t, filepath.Join(dir, "mqtt-broker"), "broker").hostNetwork()
	b.spec.Root.Readonly = false
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	cmd := h.runc(t, b, "run", "--detach")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run --detach on %s: %v", h.name, err)
	}
	log := filepath.Join(b.rootfs, "tmp", "broker.log")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if inNetns(h.ns, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/1883").Run() == nil {
			return log
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(log)
			t.Fatalf("the broker on %s does not listen:\n%s", h.name, out)
		}
	}
}

// TestFederation: three hosts, each a network namespace with its own
// swtpm (EK certificate from a maker CA of its own), agent with its root
// in the TPM, and trust domain, each naming the others as peers with
// their EKs and, for C, PCR 16's value. Every agent takes the others'
// bundles once their evidence verifies; the MQTT client container on A
// logs in over mutual TLS (go-spiffe, federated bundles) to the broker
// container on B, and C's client too. Then
// C's PCR 16 changes: within one refresh A and B drop C's bundle (one
// line in the log and in status naming the PCR), and C's client is
// refused while A's still logs in. A peer whose EK is not the pinned one
// (C's entry for A pins B's EK, as after a TPM replaced) is refused as
// such.
func TestFederation(t *testing.T) {
	requires(t, "runc", "ip", "nsenter", "bash")
	hosts := newFedHosts(t, "a", "b", "c")
	a, b, c := hosts[0], hosts[1], hosts[2]
	pcr16 := "16=" + strings.Repeat("00", 32) // after TPM2_Startup(CLEAR)
	a.start(t, b.peerOf(b.ek), c.peerOf(c.ek, pcr16))
	b.start(t, a.peerOf(a.ek), c.peerOf(c.ek, pcr16))
	c.start(t, b.peerOf(b.ek), a.peerOf(b.ek)) // A's EK pinned wrong

	for _, h := range []*fedHost{a, b} {
		for _, td := range []string{"a.test", "b.test", "c.test"} {
			if td != h.td {
				h.waitPeer(t, td, true, time.Minute)
			}
		}
	}
	c.waitPeer(t, "b.test", true, time.Minute)
	if p := c.waitPeer(t, "a.test", false, time.Minute); !strings.Contains(p.Reason, "wrong EK: the evidence's EK is ") {
		t.Errorf("C's refusal of A's changed EK: %q", p.Reason)
	}

	blog := b.mqttBroker(t, "a.test", "c.test")
	for _, h := range []*fedHost{a, c} {
		h.mqttLogin(t, b, blog)
	}
	if l, _ := os.ReadFile(blog); !strings.Contains(string(l), `username="spiffe://a.test/client" spiffe_id="spiffe://a.test/client"`) ||
		!strings.Contains(string(l), `username="spiffe://c.test/client" spiffe_id="spiffe://c.test/client"`) {
		t.Errorf("the broker's log lacks A's and C's logins:\n%s", l)
	}

	c.tpm.extendPCR(t, 16)
	changed := time.Now()
	for _, h := range []*fedHost{a, b} {
		p := h.waitPeer(t, "c.test", false, time.Minute)
		if !strings.Contains(p.Reason, "PCR mismatch: PCR 16 is ") {
			t.Errorf("%s's refusal of C: %q", h.name, p.Reason)
		}
	}
	took := time.Since(changed)
	for _, h := range []*fedHost{a, b} {
		// The line follows the status file by a moment.
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.agent.out.String(),
			"federation: peer c.test refused, its bundle is not trusted: PCR mismatch: PCR 16 is "); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s's agent log lacks the refusal of C:\n%s", h.name, h.agent.out)
				break
			}
		}
	}
	// One refresh: a check every 80 % of the hint, bounded by its
	// timeout (5 s); status is polled every 100 ms.
	t.Logf("A and B dropped C's bundle %s after its PCR 16 changed (refresh hint %s; machine shared)", took.Round(time.Millisecond), fedRefresh)
	if took > fedRefresh+5*time.Second {
		t.Errorf("C's bundle dropped after %s, more than one refresh (%s) and a check's timeout", took, fedRefresh)
	}
	if r := b.e.ctl(t, "status"); !strings.Contains(r.stdout, "c.test") || !strings.Contains(r.stdout, "refused since") {
		t.Errorf("B's status does not show C refused:\n%s", r)
	}
	// C still trusts B: the refusal is B's.
	c.waitPeer(t, "b.test", true, time.Minute)
	if r := c.mqttClient(t, b); r.err == nil {
		t.Errorf("C's MQTT client logged in to B after C's PCR changed:\n%s", r)
	}
	a.mqttLogin(t, b, blog)
	l, _ := os.ReadFile(blog)
	refusedC := false
	for _, line := range strings.Split(string(l), "\n") {
		refusedC = refusedC || strings.Contains(line, "refused: TLS handshake: ") && strings.Contains(line, `\"c.test\"`) &&
			strings.Contains(line, "remote="+c.addr+":")
	}
	if !refusedC {
		t.Errorf("the broker's log lacks the refusal of C's client for its trust domain:\n%s", l)
	}
	// Peers checked over and over (and at once: a busy TPM's 503 is
	// asked again) are never dropped while their TPMs answer.
	for _, h := range []*fedHost{a, b} {
		for _, other := range []*fedHost{a, b} {
			out := h.agent.out.String()
			trusted := strings.Index(out, "peer "+other.td+" attested")
			if other != h && (trusted < 0 || strings.Contains(out[trusted:], "peer "+other.td+" refused")) {
				t.Errorf("%s dropped %s once it trusted it, though its TPM did not change:\n%s", h.name, other.name, out)
			}
		}
	}
}
