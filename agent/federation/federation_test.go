// SPDX-License-Identifier: Apache-2.0

package federation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/attest"
	"github.com/northstar-oci/northstar/internal/testenv"
)

// ekCA makes a TPM maker's CA and an EK certificate it issued, as the TCG
// profile has it (an empty subject, a critical subjectAltName naming the
// TPM's manufacturer, model and version), and returns the CA's pool, the
// certificate's DER and the PKIX DER of its key.
func ekCA(t *testing.T) (*x509.CertPool, []byte, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test TPM maker"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	var rdns pkix.RDNSequence
	for _, oid := range []asn1.ObjectIdentifier{{2, 23, 133, 2, 1}, {2, 23, 133, 2, 2}, {2, 23, 133, 2, 3}} {
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: "x"}})
	}
	name, _ := asn1.Marshal(rdns)
	dn, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name})
	san, _ := asn1.Marshal([]asn1.RawValue{{FullBytes: dn}})
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: ca.NotBefore, NotAfter: ca.NotAfter, KeyUsage: x509.KeyUsageKeyEncipherment,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &ek.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, der, pub
}

// peerAt is a peer whose evidence and bundle endpoints are ts.
func peerAt(ts *httptest.Server, roots *x509.CertPool, ek []byte) Peer {
	return Peer{TrustDomain: spiffeid.RequireTrustDomainFromString("peer.test"), BundleURL: ts.URL + BundlePath,
		EvidenceURL: ts.URL + EvidencePath, EKRoots: roots, EK: ek}
}

// TestCheckRefusesBadPeers: each bad answer is refused with one line
// naming it, within the check's timeout, and never yields a bundle.
func TestCheckRefusesBadPeers(t *testing.T) {
	roots, ekCert, ek := ekCA(t)
	_, _, otherEK := ekCA(t)
	// Evidence of a TPM whose EK is not the pinned one: refused before
	// anything else in it is looked at.
	replaced, _ := json.Marshal(attest.Evidence{Version: attest.Version, EKCertificate: ekCert})
	var busy atomic.Int32
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		pinned  []byte
		want    string
	}{
		{"junk", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>hello</html>")) }, ek,
			"the evidence does not parse"},
		{"huge", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"version": 1, "x": "`))
			w.Write(bytes.Repeat([]byte("a"), 4<<20))
		}, ek, "evidence from https://127.0.0.1:PORT/evidence: the answer is larger than 1048576 bytes"},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"version": 1,`))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // trickles nothing more, forever
		}, ek, "evidence from https://127.0.0.1:PORT/evidence: no answer within the check's timeout ([federation] timeout)"},
		{"silent", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, ek,
			"no answer within the check's timeout"},
		{"busy", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }, ek,
			"its TPM was busy with other verifiers until the check's timeout"},
		{"busy once", func(w http.ResponseWriter, _ *http.Request) {
			if busy.Add(1) == 1 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("junk"))
		}, ek, "the evidence does not parse"},
		{"error", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "the TPM is on fire", 500) }, ek,
			`500 Internal Server Error: "the TPM is on fire"`},
		{"changed EK", func(w http.ResponseWriter, _ *http.Request) { w.Write(replaced) }, otherEK,
			"wrong EK: the evidence's EK is "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewTLSServer(tc.handler)
			defer ts.Close()
			want := strings.ReplaceAll(tc.want, "127.0.0.1:PORT", strings.TrimPrefix(ts.URL, "https://"))
			began := time.Now()
			hint, der, err := check(context.Background(), Options{Timeout: time.Second, MaxRefresh: time.Minute}, peerAt(ts, roots, tc.pinned))
			if err == nil || der != nil || hint != 0 {
				t.Fatalf("check = %s, %d bytes, %v; want a refusal", hint, len(der), err)
			}
			if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("refusal %q, want one line with %q", err, want)
			}
			if took := time.Since(began); took > 3*time.Second {
				t.Errorf("the check took %s, its timeout is 1s", took)
			}
		})
	}
}

// TestWatchDropsAndSays: a peer that fails is dropped from the set (its
// change notified), said once in the log however often it is checked
// again, and shown in the status file.
func TestWatchDropsAndSays(t *testing.T) {
	roots, _, ek := ekCA(t)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("junk")) }))
	defer ts.Close()
	status := t.TempDir() + "/" + StatusFile
	set := NewSet(status)
	td := spiffeid.RequireTrustDomainFromString("peer.test")
	// As if it had passed once.
	set.set(td, []byte("a root"), "", time.Now(), time.Now())
	bundles, changed := set.FederatedBundles()
	if len(bundles) != 1 {
		t.Fatalf("%d bundles", len(bundles))
	}
	var log testenv.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := Watch(ctx, set, Options{Peers: []Peer{peerAt(ts, roots, ek)}, Timeout: time.Second, MaxRefresh: 100 * time.Millisecond, Log: &log})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the failed peer's drop was not notified")
	}
	if b, _ := set.FederatedBundles(); len(b) != 0 {
		t.Errorf("a failed peer's bundle is still handed out")
	}
	time.Sleep(5 * MinRecheck) // several checks more
	cancel()
	<-done
	if n := strings.Count(log.String(), "\n"); n != 1 || !strings.HasPrefix(log.String(),
		"northstar agent: federation: peer peer.test refused, its bundle is not trusted: the evidence does not parse: ") {
		t.Errorf("the log has %d lines for one failure:\n%s", n, log.String())
	}
	st, err := ReadStatus(strings.TrimSuffix(status, "/"+StatusFile))
	if err != nil || len(st) != 1 || st[0].Trusted || !strings.HasPrefix(st[0].Reason, "the evidence does not parse") {
		t.Errorf("status = %+v, %v", st, err)
	}
}

// fakeAttester answers after a while, or fails.
type fakeAttester struct {
	delay time.Duration
	calls chan []byte
}

func (f *fakeAttester) Evidence(_ context.Context, nonce []byte) (*attest.Evidence, error) {
	f.calls <- nonce
	time.Sleep(f.delay)
	return &attest.Evidence{Version: attest.Version, Nonce: nonce}, nil
}

func (f *fakeAttester) Answer(context.Context, *attest.Challenge) (*attest.Evidence, error) {
	return nil, errors.New("attest: activate the challenge: no")
}

// TestEndpoint: the bundle endpoint serves the CA's certificate with the
// refresh hint under the endpoint's SPIFFE ID; evidence answers a nonce of
// the right size only, one verifier at a time (the others 503 at once),
// and a challenge within its bound.
func TestEndpoint(t *testing.T) {
	ca, err := spiffe.LoadCA(spiffeid.RequireTrustDomainFromString("here.test"), func(dst []byte) error {
		copy(dst, "a seed for the endpoint test ....")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	att := &fakeAttester{delay: 500 * time.Millisecond, calls: make(chan []byte, 4)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, EndpointOptions{CA: ca, Attester: att, RefreshHint: 7 * time.Second, Timeout: 5 * time.Second})
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	base := "https://" + ln.Addr().String()

	// The bundle, over TLS authenticated as the endpoint's SPIFFE ID.
	p := Peer{TrustDomain: ca.TrustDomain(), BundleURL: base + BundlePath}
	b, err := fetchBundle(context.Background(), p, ca.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	if a := b.X509Authorities(); len(a) != 1 || !a[0].Equal(ca.Certificate()) {
		t.Errorf("the bundle's authorities: %d", len(a))
	}
	if h, ok := b.RefreshHint(); !ok || h != 7*time.Second {
		t.Errorf("refresh hint %s, %v", h, ok)
	}
	// Another trust domain's root does not authenticate it.
	other, _ := spiffe.LoadCA(spiffeid.RequireTrustDomainFromString("here.test"), func(dst []byte) error {
		copy(dst, "another seed .....................")
		return nil
	})
	if _, err := fetchBundle(context.Background(), p, other.Certificate()); err == nil {
		t.Error("the endpoint was authenticated by another root")
	}

	get := func(u string, body []byte) (int, string) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		defer tr.CloseIdleConnections()
		method := http.MethodGet
		if body != nil {
			method = http.MethodPost
		}
		req, _ := http.NewRequest(method, u, bytes.NewReader(body))
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	for _, n := range []string{"", "zz", "00", strings.Repeat("00", 33)} {
		if code, _ := get(base+EvidencePath+"?nonce="+n, nil); code != http.StatusBadRequest {
			t.Errorf("nonce %q: %d", n, code)
		}
	}
	if code, out := get(base+EvidencePath, bytes.Repeat([]byte("a"), 64<<10)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge challenge: %d %s", code, out)
	}
	if code, out := get(base+EvidencePath, []byte(`{"ak": "AA==", "ek": "AA==", "credential": "AA==", "secret": "AA=="}`)); code != http.StatusUnprocessableEntity ||
		!strings.Contains(out, "activate the challenge") {
		t.Errorf("a challenge the TPM refuses: %d %s", code, out)
	}
	// One verifier at a time.
	first := make(chan int)
	go func() {
		code, _ := get(base+EvidencePath+"?nonce="+strings.Repeat("ab", 16), nil)
		first <- code
	}()
	<-att.calls
	if code, _ := get(base+EvidencePath+"?nonce="+strings.Repeat("cd", 16), nil); code != http.StatusServiceUnavailable {
		t.Errorf("a second verifier while the TPM answers: %d", code)
	}
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first verifier: %d", code)
	}
}
