// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// nsspiffeBinary builds integration/nsspiffe (static, go-spiffe only) once
// per run into bins.dir.
var nsspiffeBinary = sync.OnceValues(func() (string, error) {
	out := filepath.Join(bins.dir, "nsspiffe")
	return out, buildStatic("..", "./integration/nsspiffe", out)
})

// spireAgentBinary is SPIRE's agent CLI as scripts/install-tools.sh builds
// it.
func spireAgentBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(toolsDir(), "spire-agent-v1.13.3", "spire-agent")
	requiresFile(t, p, "scripts/install-tools.sh builds it")
	return p
}

// spiffeEnv is apiEnv with the SPIFFE Workload API on (trust domain
// example.org) and the extra [spiffe] keys.
func spiffeEnv(t *testing.T, extra string) (*env, string) {
	t.Helper()
	sock := agentSocket(t, nil)
	return newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n[spiffe]\ntrust_domain = \"example.org\"\n%s", sock, extra), nil), sock
}

// spiffeBundle is apiBundle with nsspiffe in /bin too.
func spiffeBundle(t *testing.T, e *env, identity, script string) *bundle {
	t.Helper()
	return apiBundle(t, e, identity, script).withHelper(t, nsspiffeBinary)
}

// hostNetwork has the container share the host's network namespace, so
// that two containers meet on 127.0.0.1.
func (b *bundle) hostNetwork() *bundle {
	var ns []specs.LinuxNamespace
	for _, n := range b.spec.Linux.Namespaces {
		if n.Type != specs.NetworkNamespace {
			ns = append(ns, n)
		}
	}
	b.spec.Linux.Namespaces = ns
	return b
}

// withBinary bind-mounts the host file bin read-only at /bin/<name>.
func (b *bundle) withBinary(t *testing.T, bin, name string) *bundle {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.rootfs, "bin", name), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/bin/" + name, Type: "bind", Source: bin, Options: []string{"bind", "ro"}})
	return b
}

// startDetached runs b in the background (`runc run --detach`), deleted at
// cleanup, and returns its id.
func startDetached(t *testing.T, e *env, b *bundle) string {
	t.Helper()
	b.write(t)
	root := filepath.Join(e.dir, "runc-root")
	id := fmt.Sprintf("ns-spiffe-%d-%d", os.Getpid(), containerSeq.Add(1))
	t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	cmd := exec.Command("runc", "--root", root, "run", "--detach", "--bundle", b.dir, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run --detach: %v", err)
	}
	return id
}

// startWriting starts a detached container of identity that runs command
// with its stdout in /tmp/out (stderr in /tmp/out.err), then then; it
// returns the host's path of /tmp/out and the bundle.
func startWriting(t *testing.T, e *env, identity, command, then string) (string, *bundle) {
	t.Helper()
	script := command + " >/tmp/out 2>/tmp/out.err"
	if then != "" {
		script += "; " + then
	}
	b := spiffeBundle(t, e, identity, script)
	b.spec.Root.Readonly = false
	startDetached(t, e, b)
	return filepath.Join(b.rootfs, "tmp", "out"), b
}

// waitFile waits until the container file p (in a rootfs) holds at least
// n lines, and returns them.
func waitFile(t *testing.T, p string, n int, timeout time.Duration) []string {
	t.Helper()
	var lines []string
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		data, _ := os.ReadFile(p)
		lines = strings.Fields(string(data))
		if len(lines) >= n && bytes.HasSuffix(data, []byte("\n")) {
			return lines
		}
		if time.Now().After(deadline) {
			errs, _ := os.ReadFile(p + ".err")
			t.Fatalf("%s has %d lines after %s, want %d; stderr: %s", p, len(lines), timeout, n, errs)
		}
	}
}

var oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}

// checkSVIDCert checks an X.509-SVID a container received against the
// X.509-SVID spec's rules, and that it verifies against the bundle's CA.
func checkSVIDCert(t *testing.T, leafB64, caB64, want string, lifetime time.Duration) *x509.Certificate {
	t.Helper()
	leaf := parseCert(t, leafB64)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Errorf("URI SANs %v, want exactly %s", leaf.URIs, want)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf: basic constraints %v, cA %v, key usage %b; want a leaf, digitalSignature alone", leaf.BasicConstraintsValid, leaf.IsCA, leaf.KeyUsage)
	}
	critical := false
	for _, e := range leaf.Extensions {
		critical = critical || e.Id.Equal(oidKeyUsage) && e.Critical
	}
	if !critical {
		t.Error("key usage is not critical")
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("extended key usage %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != lifetime {
		t.Errorf("lifetime %s, want %s", got, lifetime)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, caB64))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the SVID does not verify against its bundle: %v", err)
	}
	return leaf
}

// parseCert parses a base64 DER certificate.
func parseCert(t *testing.T, b64 string) *x509.Certificate {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSPIFFEInContainers: go-spiffe's X509Source and JWTSource, and
// SPIRE's spire-agent CLI, unchanged, in containers under real runc:
// each container finds spiffe.sock beside api.sock and gets the SVIDs of
// its own identity alone, under one per-host CA; a JWT-SVID validates in
// another container through ValidateJWTSVID.
func TestSPIFFEInContainers(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	startAgent(t, e, sock)
	in := func(identity, script string) string {
		t.Helper()
		r := spiffeBundle(t, e, identity, script).runcRun(t)
		if r.err != nil {
			t.Fatalf("container %s failed:\n%s", identity, r)
		}
		return strings.TrimSpace(r.stdout)
	}

	if ls := in("client", "ls -A /run/northstar/api"); ls != "api.sock\nspiffe.sock" {
		t.Errorf("the API directory holds %q, want api.sock and spiffe.sock", ls)
	}
	var ca string
	for identity, want := range map[string]string{
		"client":                "spiffe://example.org/client",
		"mallory":               "spiffe://example.org/mallory",
		"default/mqtt-0/broker": "spiffe://example.org/default/mqtt-0/broker",
		"svc@example.org:443":   "spiffe://example.org/svc_40example.org_3A443",
	} {
		f := strings.Fields(in(identity, "nsspiffe x509"))
		if len(f) != 3 || f[0] != want {
			t.Errorf("container %s: X509Source holds %q, want %s", identity, f, want)
			continue
		}
		checkSVIDCert(t, f[1], f[2], want, time.Hour)
		if ca != "" && f[2] != ca {
			t.Error("two containers got two CAs")
		}
		ca = f[2]
	}

	tok := in("client", "nsspiffe jwt server")
	if got := in("server", "nsspiffe validate "+tok+" server"); got != "spiffe://example.org/client" {
		t.Errorf("ValidateJWTSVID in the server's container: %q", got)
	}
	r := spiffeBundle(t, e, "server", "nsspiffe validate "+tok+" other").runcRun(t)
	if r.err == nil || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Errorf("a JWT-SVID validated for an audience it was not made for:\n%s", r)
	}

	// SPIRE's own CLI, pointed at the container's socket, in the container.
	spire := spiffeBundle(t, e, "default/mqtt-0/broker",
		"spire-agent api fetch x509 -socketPath /run/northstar/api/spiffe.sock -output json && echo && "+
			"spire-agent api fetch jwt -audience mqtt -socketPath /run/northstar/api/spiffe.sock -output json").withBinary(t, spireAgentBinary(t), "spire-agent")
	r = spire.runcRun(t)
	if r.err != nil {
		t.Fatalf("spire-agent in a container: %v\n%s", r.err, r.stderr) // stdout holds a key
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var x struct {
		SVIDs []struct {
			SpiffeID string `json:"spiffe_id"`
			Cert     []byte `json:"x509_svid"`
			Bundle   []byte `json:"bundle"`
		} `json:"svids"`
	}
	var j []struct {
		SVIDs []struct {
			SpiffeID string `json:"spiffe_id"`
			SVID     string `json:"svid"`
		} `json:"svids"`
		Bundles map[string][]byte `json:"bundles"`
	}
	if err := dec.Decode(&x); err != nil || dec.Decode(&j) != nil {
		t.Fatalf("spire-agent's output does not parse: %v", err)
	}
	if len(x.SVIDs) != 1 || x.SVIDs[0].SpiffeID != "spiffe://example.org/default/mqtt-0/broker" {
		t.Fatalf("spire-agent api fetch x509: %d SVIDs", len(x.SVIDs))
	}
	checkSVIDCert(t, base64.StdEncoding.EncodeToString(x.SVIDs[0].Cert), base64.StdEncoding.EncodeToString(x.SVIDs[0].Bundle),
		"spiffe://example.org/default/mqtt-0/broker", time.Hour)
	if len(j) != 2 || len(j[0].SVIDs) != 1 || j[0].SVIDs[0].SpiffeID != "spiffe://example.org/default/mqtt-0/broker" || len(j[1].Bundles["spiffe://example.org"]) == 0 {
		t.Fatalf("spire-agent api fetch jwt: %+v", j)
	}
	if got := in("mqtt", "nsspiffe validate "+j[0].SVIDs[0].SVID+" mqtt"); got != "spiffe://example.org/default/mqtt-0/broker" {
		t.Errorf("the JWT-SVID spire-agent fetched, validated in another container: %q", got)
	}
}

// freePort is a TCP port on 127.0.0.1 nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSPIFFETLSBetweenContainers: go-spiffe's spiffetls between two
// containers, each with its SVID from its own socket: the server container
// authorizes spiffe://example.org/client alone; mallory, whose SVID is
// just as valid, is refused; a client that expects another server refuses
// the real one.
func TestSPIFFETLSBetweenContainers(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	startAgent(t, e, sock)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	server := spiffeBundle(t, e, "server", "nsspiffe tls-server "+addr+" spiffe://example.org/client").hostNetwork()
	startDetached(t, e, server)
	waitListening(t, addr)
	dial := func(identity, serverID string) result {
		return spiffeBundle(t, e, identity, "nsspiffe tls-client "+addr+" "+serverID).hostNetwork().runcRun(t)
	}
	if r := dial("client", "spiffe://example.org/server"); r.err != nil || strings.TrimSpace(r.stdout) != "hello spiffe://example.org/client" {
		t.Fatalf("client to server:\n%s", r)
	}
	if r := dial("mallory", "spiffe://example.org/server"); r.err == nil || strings.Contains(r.stdout, "hello") {
		t.Errorf("mallory got through:\n%s", r)
	}
	if r := dial("client", "spiffe://example.org/other"); r.err == nil || !strings.Contains(r.stderr, "unexpected ID") {
		t.Errorf("a client that expects another server:\n%s", r)
	}
	if r := dial("client", "spiffe://example.org/server"); r.err != nil || strings.TrimSpace(r.stdout) != "hello spiffe://example.org/client" {
		t.Errorf("client to server again, after the refusals:\n%s", r)
	}
}

// TestSPIFFEStreamAfterRotate: an open FetchX509SVID stream in a container
// gets a new SVID once `northstarctl rotate` has made a new generation,
// long before the first one's half-life (30 min).
func TestSPIFFEStreamAfterRotate(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	a := startAgent(t, e, sock)
	out, _ := startWriting(t, e, "watcher", "nsspiffe watch 2", "")
	first := waitFile(t, out, 1, 10*time.Second)
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	rotated := time.Now()
	a.waitGeneration(t, 2)
	both := waitFile(t, out, 2, 10*time.Second)
	if both[0] != first[0] || both[1] == both[0] {
		t.Errorf("the stream's serials %q, want a second, new one", both)
	}
	t.Logf("a new SVID %s after the rotation", time.Since(rotated).Round(time.Millisecond))
}

// TestSVIDKeyNeverLeaks: the key of an X.509-SVID a container holds is
// nowhere on the host but in that container: not in any process's argv or
// environment, not in the state directory (sealed keys, audit log), the
// agent's directories, the bundle, or the agent's output. Its copies in the
// agent's memory are measured, not asserted (the crypto/ecdsa key object
// is garbage until the heap reuses it; docs/spiffe.md).
func TestSVIDKeyNeverLeaks(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	a := startAgent(t, e, sock)
	svidFile, b := startWriting(t, e, "client", "nsspiffe x509-key", "sleep 600")
	f := waitFile(t, svidFile, 4, 10*time.Second)
	key, err := base64.StdEncoding.DecodeString(f[3])
	if err != nil || len(key) < 64 {
		t.Fatalf("the key the container printed: %d bytes, %v", len(key), err)
	}
	b64 := base64.StdEncoding.EncodeToString(key)
	needles := map[string][]byte{"raw": key, "base64": []byte(b64), "hex": []byte(hex.EncodeToString(key)),
		"a PEM line": []byte(b64[:64])}
	leaks := func(where string, data []byte) {
		for form, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("the SVID's key (%s) appears in %s", form, where)
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, name := range []string{"cmdline", "environ"} {
			if data, err := os.ReadFile(filepath.Join(p, name)); err == nil {
				leaks(p+"/"+name, data)
			}
		}
	}
	scanned := 0
	for _, dir := range []string{e.cfg.StateDir, filepath.Dir(sock), b.dir} {
		_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || p == svidFile || strings.HasPrefix(p, filepath.Join(b.rootfs, "proc")) {
				return nil
			}
			data, _ := os.ReadFile(p)
			scanned++
			leaks(p, data)
			return nil
		})
	}
	leaks("the agent's output", a.out.Bytes())
	audit, err := os.ReadFile(filepath.Join(e.cfg.StateDir, "audit.log"))
	if err != nil || !bytes.Contains(audit, []byte("spiffe-x509-issued")) {
		t.Errorf("the audit log lacks the issuance: %v", err)
	}
	_, copies := scanMemory(t, a.cmd.Process.Pid, [][]byte{key}, "")
	priv, err := x509.ParsePKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := priv.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	_, scalars := scanMemory(t, a.cmd.Process.Pid, [][]byte{scalar}, "")
	t.Logf("scanned %d files; in the agent's memory after the answer: %d copies of the SVID's PKCS #8 key %v, %d of its private scalar %v",
		scanned, len(copies), copies, len(scalars), scalars)
}
