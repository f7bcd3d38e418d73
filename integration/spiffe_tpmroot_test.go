// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fetchX509 runs spire-agent's `api fetch x509` in a container of
// identity and returns the SVID's chain (leaf first) and the bundle.
func fetchX509(t *testing.T, e *env, identity string) (chain, bundle []*x509.Certificate) {
	t.Helper()
	r := spiffeBundle(t, e, identity, "spire-agent api fetch x509 -socketPath /run/northstar/api/spiffe.sock -output json").
		withBinary(t, spireAgentBinary(t), "spire-agent").runcRun(t)
	if r.err != nil {
		t.Fatalf("spire-agent in a container: %v\n%s", r.err, r.stderr) // stdout holds a key
	}
	var x struct {
		SVIDs []struct {
			Cert   []byte `json:"x509_svid"`
			Bundle []byte `json:"bundle"`
		} `json:"svids"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &x); err != nil || len(x.SVIDs) != 1 {
		t.Fatalf("spire-agent's output: %v, %d SVIDs", err, len(x.SVIDs))
	}
	chain, err := x509.ParseCertificates(x.SVIDs[0].Cert)
	if err != nil {
		t.Fatal(err)
	}
	if bundle, err = x509.ParseCertificates(x.SVIDs[0].Bundle); err != nil {
		t.Fatal(err)
	}
	return chain, bundle
}

// TestSPIFFERootInTPM: with [spiffe] root = "tpm", the trust domain's
// bundle is the root `attest` shows certified by the AK of a TPM whose EK
// the manufacturer CA vouches for; containers' X.509-SVIDs chain to it
// through the agent's intermediate, and go-spiffe's mutual TLS between two
// containers accepts them; all with the TPM stopped once the agent runs
// (no container start waits for the TPM); after a restart of TPM and agent
// the bundle is the same.
func TestSPIFFERootInTPM(t *testing.T) {
	requires(t, "runc")
	tpm, ekCA := newSWTPMWithEK(t)
	e, sock := newAgentTPMEnv(t, tpm, "[api]\nenable = true\n[spiffe]\ntrust_domain = \"example.org\"\nroot = \"tpm\"\nca_ttl = \"3h\"\n")

	nonce := randomHex(t, 32)
	r := e.ctl(t, "attest", "--nonce", nonce)
	if r.err != nil {
		t.Fatalf("attest:\n%s", r)
	}
	evFile := e.dir + "/evidence.json"
	writeFile(t, evFile, r.stdout)
	if v := e.ctl(t, "attest", "verify", evFile, "--nonce", nonce, "--ek-ca", ekCA); v.err != nil ||
		!strings.Contains(v.stdout, "fixedTPM fixedParent sensitiveDataOrigin") {
		t.Fatalf("attest verify:\n%s", v)
	}
	var ev struct {
		Root struct {
			Certificate []byte `json:"certificate"`
		} `json:"root"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ev); err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(ev.Root.Certificate)
	if err != nil {
		t.Fatal(err)
	}

	a := startAgent(t, e, sock)
	if !strings.Contains(a.out.String(), fmt.Sprintf("SPIFFE root %q in the TPM", root.Subject.CommonName)) {
		t.Errorf("the agent does not say its root is in the TPM:\n%s", a.out)
	}
	tpm.stop()

	chain, bundle := fetchX509(t, e, "client")
	if len(bundle) != 1 || !bundle[0].Equal(root) {
		t.Fatalf("the bundle is not the attested TPM root")
	}
	if len(chain) != 2 || !chain[1].IsCA || chain[1].NotAfter.Sub(chain[1].NotBefore) != 3*time.Hour {
		t.Fatalf("the SVID's chain: %d certificates, want the leaf and a 3 h intermediate", len(chain))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inter.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the SVID does not chain to the TPM root: %v", err)
	}
	if chain[0].URIs[0].String() != "spiffe://example.org/client" {
		t.Errorf("SVID for %s", chain[0].URIs[0])
	}

	// go-spiffe's mutual TLS checks the chain through the intermediate.
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDetached(t, e, spiffeBundle(t, e, "server", "nsspiffe tls-server "+addr+" spiffe://example.org/client").hostNetwork())
	waitListening(t, addr)
	if r := spiffeBundle(t, e, "client", "nsspiffe tls-client "+addr+" spiffe://example.org/server").hostNetwork().runcRun(t); r.err != nil ||
		strings.TrimSpace(r.stdout) != "hello spiffe://example.org/client" {
		t.Fatalf("client to server under the TPM root:\n%s", r)
	}

	// A restart of TPM and agent: the same root, a new intermediate.
	if err := a.stop(t); err != nil {
		t.Fatalf("agent stop: %v\n%s", err, a.out)
	}
	tpm.serveManufactured(t)
	startAgent(t, e, sock)
	chain2, bundle2 := fetchX509(t, e, "client")
	if !bundle2[0].Equal(root) {
		t.Error("the bundle changed across a restart")
	}
	if chain2[1].Equal(chain[1]) {
		t.Error("the restarted agent kept the old intermediate")
	}
}

// waitListening waits until a container's TLS server listens on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the TLS server container does not listen")
		}
	}
}

// TestSPIFFETPMRootOnSlowTPM: behind a TPM as slow as a discrete one (30 ms
// a command), the agent with root = "tpm" signs its intermediate before it
// serves, and containers' starts and X.509-SVIDs then send the TPM no
// command at all.
func TestSPIFFETPMRootOnSlowTPM(t *testing.T) {
	requires(t, "runc", "swtpm")
	proxy := newTPMProxy(t, newSWTPM(t, nil), 30*time.Millisecond)
	e, sock := newAgentTPMEnv(t, proxy, "[api]\nenable = true\n[spiffe]\ntrust_domain = \"example.org\"\nroot = \"tpm\"\n")
	began := time.Now()
	a := startAgent(t, e, sock)
	atStart := proxy.commands.Load()
	t.Logf("agent up in %s with root = \"tpm\" behind the 30 ms proxy (%d TPM commands so far, init's and the agent's)",
		time.Since(began).Round(time.Millisecond), atStart)
	if !strings.Contains(a.out.String(), "SPIFFE root \"northstar TPM root ") {
		t.Fatalf("the agent does not say its root is in the TPM:\n%s", a.out)
	}
	for _, identity := range []string{"client", "server", "client"} {
		b := spiffeBundle(t, e, identity, "nsspiffe x509") // builds nsspiffe the first time
		began := time.Now()
		r := b.runcRun(t)
		if r.err != nil || !strings.HasPrefix(r.stdout, "spiffe://example.org/"+identity+" ") {
			t.Fatalf("container %s:\n%s", identity, r)
		}
		t.Logf("container %s started and fetched its SVID in %s", identity, time.Since(began).Round(time.Millisecond))
	}
	if n := proxy.commands.Load() - atStart; n != 0 {
		t.Errorf("three container starts with SVIDs sent the TPM %d commands, want none", n)
	}
}
