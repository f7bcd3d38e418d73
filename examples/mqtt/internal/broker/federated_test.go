// SPDX-License-Identifier: Apache-2.0

package broker_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/examples/mqtt/internal/broker"
)

// trusting is the federated bundles of a host's agent: fixed here.
type trusting map[string][]byte

func (f trusting) FederatedBundles() (map[string][]byte, <-chan struct{}) { return f, nil }

// newTrustDomain is a host of trust domain td, its agent's CA made from
// seed.
func newTrustDomain(t *testing.T, td string, seed byte) *workloadAPI {
	t.Helper()
	w := newWorkloadAPI(t, seed)
	ca, err := spiffe.LoadCA(spiffeid.RequireTrustDomainFromString(td), func(dst []byte) error {
		for i := range dst {
			dst[i] = seed
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.ca = ca
	return w
}

// federatedSocket is socket with the given federated bundles.
func (w *workloadAPI) federatedSocket(t *testing.T, identity string, fed trusting) string {
	t.Helper()
	s, err := spiffe.NewServer(identity, spiffe.Config{CA: w.ca, Lifecycle: spiffe.NewGenerations(1), Audit: discard{}, Limiter: allow{},
		X509TTL: time.Hour, JWTTTL: time.Minute, Federated: fed})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(w.dir, identity+".sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Close)
	return "unix://" + sock
}

// TestMTLSFederated: a broker of b.test started with --federated a.test
// lets in a.test's client, which gives its whole SPIFFE ID as username
// and names the broker by its whole SPIFFE ID; the same client's bare
// identity as username, a trust domain the broker does not federate with,
// and a host whose bundle the broker's agent does not hold all get
// nowhere.
func TestMTLSFederated(t *testing.T) {
	a, b, c := newTrustDomain(t, "a.test", 1), newTrustDomain(t, "b.test", 2), newTrustDomain(t, "c.test", 3)
	bundles := trusting{"spiffe://a.test": a.ca.Certificate().Raw, "spiffe://b.test": b.ca.Certificate().Raw, "spiffe://c.test": c.ca.Certificate().Raw}
	src, err := broker.X509Source(context.Background(), b.federatedSocket(t, "broker", bundles))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	log := new(syncBuffer)
	br, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", SPIFFE: src, Log: log,
		Federated: []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("a.test")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	aClient := a.federatedSocket(t, "client", bundles)
	cClient := c.federatedSocket(t, "client", bundles)
	unknown := newTrustDomain(t, "a.test", 4).federatedSocket(t, "client", bundles) // another host claiming a.test

	stdout, stderr, code := runMTLSClient(t, "--broker", br.Addr(), "--spiffe-socket", aClient, "--client-id", "fa",
		"--audience", "spiffe://b.test/broker", "--username", "spiffe://a.test/client")
	if code != 0 || !roundTripOK.MatchString(stdout) {
		t.Fatalf("a.test's client: exit %d\nstdout: %q\nstderr: %q\nbroker log:\n%s", code, stdout, stderr, log.String())
	}
	if !waitForLog(log, `accepted client_id="fa" username="spiffe://a.test/client" spiffe_id="spiffe://a.test/client"`) {
		t.Errorf("broker log lacks the federated login:\n%s", log.String())
	}
	for _, tc := range []struct {
		name, sock, username, log string
		code                      int
	}{
		{"bare identity", aClient, "client", `refused: the certificate is not the username's client_id="f1"`, 3},
		{"not federated", cClient, "spiffe://c.test/client", `refused: TLS handshake: "spiffe://c.test/client is not of trust domain \"b.test\" nor of a federated one"`, 1},
		{"another host's a.test", unknown, "spiffe://a.test/client", `refused: TLS handshake: "x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"`, 1},
	} {
		before := strings.Count(log.String(), tc.log)
		_, stderr, code := runMTLSClient(t, "--broker", br.Addr(), "--spiffe-socket", tc.sock, "--client-id", "f1",
			"--audience", "spiffe://b.test/broker", "--username", tc.username)
		if code == 0 || tc.code == 3 && code != 3 {
			t.Errorf("%s: exit %d, want a refusal\nstderr: %q", tc.name, code, stderr)
		}
		for deadline := time.Now().Add(5 * time.Second); strings.Count(log.String(), tc.log) == before; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s: broker log lacks a new %q:\n%s", tc.name, tc.log, log.String())
				break
			}
		}
	}
}
