// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/attest"
)

// attestHost is one host of the attestation tests: a swtpm with an EK
// certificate and a northstar state on it.
type attestHost struct {
	tpm   *swtpm
	ekCA  string // PEM of the swtpm-localca that issued the EK certificate
	env   *env
	dir   string
	nonce string
}

func newAttestHost(t *testing.T) *attestHost {
	t.Helper()
	tpm, ekCA := newSWTPMWithEK(t)
	dir := worldDir(t)
	e := envIn(t, dir, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\n[agent]\nsocket = %q\n[api]\nenable = true\n[spiffe]\ntrust_domain = \"a.example\"\n", tpm.path(), filepath.Join(dir, "agent.sock")), nil)
	return &attestHost{tpm: tpm, ekCA: ekCA, env: e, dir: dir}
}

// evidence runs `northstarctl attest` with args and writes its output to a file.
func (h *attestHost) evidence(t *testing.T, name string, args ...string) (string, *attest.Evidence) {
	t.Helper()
	r := h.env.ctl(t, append([]string{"attest"}, args...)...)
	if r.err != nil {
		t.Fatalf("attest:\n%s", r)
	}
	ev, err := attest.ParseEvidence([]byte(r.stdout))
	if err != nil {
		t.Fatalf("attest printed no evidence: %v\n%s", err, r)
	}
	path := filepath.Join(h.dir, name)
	writeFile(t, path, r.stdout)
	return path, ev
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// verify runs `northstarctl attest verify` on the evidence file.
func (h *attestHost) verify(t *testing.T, evidence string, args ...string) result {
	t.Helper()
	return h.env.ctl(t, append([]string{"attest", "verify", evidence}, args...)...)
}

// refusedWith checks r failed with exit status 1 and one line saying want.
func refusedWith(t *testing.T, what string, r result, want string) {
	t.Helper()
	if r.err == nil || !strings.Contains(r.stderr, want) {
		t.Errorf("%s: not refused with %q:\n%s", what, want, r)
		return
	}
	if code := exitCode(r); code != 1 {
		t.Errorf("%s: exit status %d, want 1:\n%s", what, code, r)
	}
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
		t.Errorf("%s: the refusal takes %d lines, want one:\n%s", what, n+1, r.stderr)
	}
}

// TestAttestRoundTrip: `northstarctl attest --nonce` on a swtpm with an EK
// certificate prints evidence `attest verify` accepts against the swtpm's
// local CA as the manufacturer's, showing the root key is a TPM key whose
// private part cannot leave it; each way the evidence can be wrong is
// refused with exit status 1 and a line naming it.
func TestAttestRoundTrip(t *testing.T) {
	a := newAttestHost(t)
	nonce := randomHex(t, 32)
	evA, ev := a.evidence(t, "a.json", "--nonce", nonce)

	// What it proves.
	pcr0 := ev.PCRs[0]
	if pcr0.Index != 0 || len(ev.PCRs) != 24 {
		t.Fatalf("evidence PCRs = %v, want the 24 SHA-256 PCRs", ev.PCRs)
	}
	ok := a.verify(t, evA, "--nonce", nonce, "--ek-ca", a.ekCA, "--pcr", "0="+hex.EncodeToString(pcr0.SHA256))
	if ok.err != nil {
		t.Fatalf("verify refused good evidence:\n%s", ok)
	}
	for _, want := range []string{
		`is a TPM's, certified by "CN=swtpm-localca"`,
		"the AK is not shown to be in that EK's TPM",
		"the quote answers nonce " + nonce,
		"PCR 0 = " + hex.EncodeToString(pcr0.SHA256),
		"[fixedTPM fixedParent sensitiveDataOrigin sign userWithAuth], certified by the AK: its private part cannot leave the TPM",
	} {
		if !strings.Contains(ok.stdout, want) {
			t.Errorf("verify does not say %q:\n%s", want, ok)
		}
	}

	// The root is made once: the same certificate at the next attest, and
	// the AK-certified key is its key.
	_, again := a.evidence(t, "again.json", "--nonce", randomHex(t, 16))
	if string(again.Root.Certificate) != string(ev.Root.Certificate) {
		t.Error("the root certificate changed between two attests")
	}
	root, err := x509.ParseCertificate(ev.Root.Certificate)
	if err != nil || !root.IsCA || root.URIs[0].String() != "spiffe://a.example" {
		t.Fatalf("root certificate: %v %+v", err, root)
	}

	// A challenge: only the TPM of the EK can release its secret, so the
	// answer's AK is shown to be that TPM's.
	chFile := filepath.Join(a.dir, "challenge.json")
	chr := a.env.ctl(t, "attest", "challenge", "--out", chFile, evA)
	if chr.err != nil {
		t.Fatalf("attest challenge:\n%s", chr)
	}
	secret := strings.TrimSpace(chr.stdout)
	if strings.Contains(mustRead(t, chFile), secret) {
		t.Fatal("the challenge file holds its secret in the clear")
	}
	evCh, _ := a.evidence(t, "answer.json", "--challenge", chFile)
	bound := a.verify(t, evCh, "--nonce", secret, "--ek-ca", a.ekCA, "--challenge", chFile)
	if bound.err != nil || !strings.Contains(bound.stdout, "ok    the AK is in that EK's TPM") {
		t.Fatalf("verify of a challenge's answer:\n%s", bound)
	}

	// Wrong nonce: the evidence answers another one (a replay).
	refusedWith(t, "wrong nonce", a.verify(t, evA, "--nonce", randomHex(t, 32), "--ek-ca", a.ekCA), "wrong nonce: the quote answers nonce "+nonce)

	// Wrong EK: a CA that did not issue it, or not the EK expected.
	otherCA := filepath.Join(a.dir, "other-ca.pem")
	writeFile(t, otherCA, selfSignedCA(t))
	refusedWith(t, "EK of another CA", a.verify(t, evA, "--nonce", nonce, "--ek-ca", otherCA), `wrong EK: the EK certificate (issuer "CN=swtpm-localca") is not issued by the EK CA`)
	otherEK := filepath.Join(a.dir, "other-ek.pem")
	writeFile(t, otherEK, publicKeyPEM(t))
	refusedWith(t, "another EK", a.verify(t, evA, "--nonce", nonce, "--ek-ca", a.ekCA, "--ek", otherEK), "wrong EK: the evidence's EK is sha256:")

	// PCR mismatch: PCR 16 moves after the evidence the policy was made from.
	pcr16 := hex.EncodeToString(ev.PCRs[16].SHA256)
	a.tpm.extendPCR(t, 16)
	n2 := randomHex(t, 32)
	evMoved, _ := a.evidence(t, "moved.json", "--nonce", n2)
	refusedWith(t, "PCR mismatch", a.verify(t, evMoved, "--nonce", n2, "--ek-ca", a.ekCA, "--pcr", "16="+pcr16), "PCR mismatch: PCR 16 is ")

	// A root not certified by this AK: another host's root and its
	// certification, in this host's evidence.
	b := newAttestHost(t)
	_, evB := b.evidence(t, "b.json", "--nonce", nonce)
	swapped := *ev
	swapped.Root = evB.Root
	refusedWith(t, "another AK's root", a.verify(t, writeEvidence(t, a.dir, "swapped.json", &swapped), "--nonce", nonce, "--ek-ca", a.ekCA),
		"the root is not certified by this AK")
	wrongCert := *ev
	wrongCert.Root = &attest.Root{Certificate: evB.Root.Certificate, Certification: ev.Root.Certification}
	refusedWith(t, "another root certificate", a.verify(t, writeEvidence(t, a.dir, "wrongcert.json", &wrongCert), "--nonce", nonce, "--ek-ca", a.ekCA),
		"the root is not certified by this AK: the root certificate's key is not the certified TPM key")

	// A challenge made for A answered by B: B's TPM cannot release it.
	if r := b.env.ctl(t, "attest", "--challenge", chFile); r.err == nil || !strings.Contains(r.stderr, "the challenge is for another AK") {
		t.Errorf("B answered A's challenge:\n%s", r)
	}
	// B's evidence verified as the answer to A's challenge.
	// (Both hosts' CAs are trusted here, so that it is the challenge's EK
	// that refuses it.)
	bothCAs := filepath.Join(a.dir, "both-cas.pem")
	writeFile(t, bothCAs, mustRead(t, a.ekCA)+mustRead(t, b.ekCA))
	evB2, _ := b.evidence(t, "b2.json", "--nonce", secret)
	refusedWith(t, "the answer of another host", a.verify(t, evB2, "--nonce", secret, "--ek-ca", bothCAs, "--challenge", chFile),
		"wrong EK: the evidence's EK is sha256:")

	// Evidence that does not parse.
	junk := filepath.Join(a.dir, "junk.json")
	writeFile(t, junk, `{"version": 1, "ek_certificate": 7}`)
	refusedWith(t, "junk", a.verify(t, junk, "--nonce", nonce, "--ek-ca", a.ekCA), "the evidence does not parse")
}

func writeEvidence(t *testing.T, dir, name string, ev *attest.Evidence) string {
	t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	writeFile(t, path, string(b))
	return path
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func selfSignedCA(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "swtpm-localca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func publicKeyPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}
