// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// spireAgent is SPIRE's own agent CLI, v1.13.3, as scripts/install-tools.sh
// builds it (make test's set-up): in CI its absence fails the test.
func spireAgent(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TOOLS_DIR")
	if dir == "" {
		dir = "/opt/northstar-tools"
	}
	p := filepath.Join(dir, "spire-agent-v1.13.3", "spire-agent")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (scripts/install-tools.sh builds it)", p, err)
		}
		t.Skipf("%s: %v (scripts/install-tools.sh builds it)", p, err)
	}
	return p
}

// spire runs the CLI and returns its stdout; the output holds an SVID's
// key, so a failure shows only stderr.
func spire(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("spire-agent %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// TestSPIRECLI: `spire-agent api fetch x509` and `api fetch jwt`, SPIRE's
// own client, pointed at the socket: its JSON output parsed and checked.
func TestSPIRECLI(t *testing.T) {
	bin := spireAgent(t)
	ts := serve(t, newCA(t, 1), "default/mqtt-0/broker", nil)

	var x struct {
		SVIDs []struct {
			SpiffeID string `json:"spiffe_id"`
			Cert     []byte `json:"x509_svid"`
			Key      []byte `json:"x509_svid_key"`
			Bundle   []byte `json:"bundle"`
		} `json:"svids"`
	}
	out := spire(t, bin, "api", "fetch", "x509", "-socketPath", ts.sock, "-output", "json")
	if err := json.Unmarshal(out, &x); err != nil {
		t.Fatalf("spire-agent api fetch x509: not the JSON expected: %v", err)
	}
	if len(x.SVIDs) != 1 || x.SVIDs[0].SpiffeID != brokerI.String() {
		t.Fatalf("spire-agent api fetch x509: %d SVIDs, the first %+q", len(x.SVIDs), x.SVIDs[0].SpiffeID)
	}
	s := x.SVIDs[0]
	svid, err := x509svid.ParseRaw(s.Cert, s.Key)
	if err != nil {
		t.Fatalf("the SVID spire-agent received: %v", err)
	}
	checkX509SVID(t, svid.Certificates[0], brokerI, time.Hour)
	if !bytes.Equal(s.Bundle, ts.cfg.CA.Certificate().Raw) {
		t.Error("the bundle spire-agent received is not the CA certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ts.cfg.CA.Certificate())
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("crypto/x509 does not verify the SVID against the bundle: %v", err)
	}

	var j []struct {
		SVIDs []struct {
			SpiffeID string `json:"spiffe_id"`
			SVID     string `json:"svid"`
		} `json:"svids"`
		Bundles map[string][]byte `json:"bundles"`
	}
	out = spire(t, bin, "api", "fetch", "jwt", "-audience", "mqtt,spiffe://example.org/client", "-socketPath", ts.sock, "-output", "json")
	if err := json.Unmarshal(out, &j); err != nil || len(j) != 2 {
		t.Fatalf("spire-agent api fetch jwt: not the JSON expected (%d values): %v", len(j), err)
	}
	if len(j[0].SVIDs) != 1 || j[0].SVIDs[0].SpiffeID != brokerI.String() {
		t.Fatalf("spire-agent api fetch jwt: %+v", j[0].SVIDs)
	}
	bundle, err := jwtbundle.Parse(td, j[1].Bundles["spiffe://example.org"])
	if err != nil {
		t.Fatalf("the JWT bundle spire-agent received: %v", err)
	}
	got, err := jwtsvid.ParseAndValidate(j[0].SVIDs[0].SVID, bundle, []string{"spiffe://example.org/client"})
	if err != nil || got.ID != brokerI || len(got.Audience) != 2 {
		t.Errorf("the JWT-SVID spire-agent received: %v, %v", got, err)
	}
	ts.audit.await(t, "spiffe-jwt-issued", func(f map[string]string) bool { return f["audience"] == "mqtt spiffe://example.org/client" })
}
