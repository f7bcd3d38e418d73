// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/audit"
)

// TestSPIFFEBesideTheAPI: with a trust domain, each registered container's
// directory holds spiffe.sock beside api.sock, serving that container's
// identity alone; rotations reach open streams; the CA (its seed in the
// store) is the same after an agent restart; the socket goes with the
// container; and issuances are in the audit log.
func TestSPIFFEBesideTheAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := options(st, dir)
	opts.API.SPIFFE = &SPIFFE{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), X509TTL: time.Hour, JWTTTL: time.Minute}
	// A bucket that refills once in 100 s: drained, it stays so for the test.
	opts.API.Limits = api.Limits{Rate: 0.01, Burst: 100}
	c, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := sleeper(t), sleeper(t)
	_, dirA, err := register(t, c, "a", "default/mqtt-0/broker", pa)
	if err != nil {
		t.Fatal(err)
	}
	_, dirB, err := register(t, c, "b", "client", pb)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(dir string) (spiffeid.ID, []byte) {
		t.Helper()
		s, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+filepath.Join(dir, spiffe.SocketName)))
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		return s.ID, s.Certificates[0].Raw
	}
	idA, _ := fetch(dirA)
	idB, _ := fetch(dirB)
	if idA.String() != "spiffe://example.org/default/mqtt-0/broker" || idB.String() != "spiffe://example.org/client" {
		t.Fatalf("the sockets issue %s and %s", idA, idB)
	}
	bundle, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+filepath.Join(dirA, spiffe.SocketName)))
	if err != nil {
		t.Fatal(err)
	}
	caBefore := bundle.Bundles()[0].X509Authorities()[0].Raw

	// A stream gets a new SVID at a rotation.
	conn, err := grpc.NewClient("unix://"+filepath.Join(dirB, spiffe.SocketName), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	c.Rotated(control.RecordID{Generation: 2}, control.RecordID{Generation: 1})
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first.Svids[0].X509Svid, second.Svids[0].X509Svid) {
		t.Error("the stream's SVID after a rotation is the one before")
	}

	// One rate for both APIs of a container: b's HTTP API drains the
	// bucket, then b's Workload API is refused, a's is not.
	c.mu.Lock()
	srvB := c.byKey[findKey(c, "b")].srv
	c.mu.Unlock()
	for {
		if ok, _ := srvB.Take(ctx); !ok {
			break
		}
	}
	_, err = workload.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"),
		&workload.JWTSVIDRequest{Audience: []string{"x"}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a JWT-SVID with the container's HTTP bucket empty: %v, want ResourceExhausted", err)
	}
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtParams("x"), workloadapi.WithAddr("unix://"+filepath.Join(dirA, spiffe.SocketName))); err != nil {
		t.Errorf("another container's JWT-SVID meanwhile: %v", err)
	}
	srvB.FlushRefusals()

	// A third container revoked (northstarctl rotate --revoke): its
	// Workload API closes with its HTTP API, and its spiffe.sock goes.
	pr := sleeper(t)
	_, dirR, err := register(t, c, "r", "revoked", pr)
	if err != nil {
		t.Fatal(err)
	}
	fetch(dirR)
	c.mu.Lock()
	sr := c.byKey[findKey(c, "r")]
	c.mu.Unlock()
	c.revoke(sr, 3)
	if _, err := os.Stat(filepath.Join(dirR, spiffe.SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a revoked container's spiffe.sock: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	if _, err := workloadapi.FetchX509SVID(short, workloadapi.WithAddr("unix://"+filepath.Join(dirR, spiffe.SocketName))); err == nil {
		t.Error("a revoked container still gets an X.509-SVID")
	}
	cancelShort()

	// The same CA after a restart; the socket is served again.
	stream.CloseSend()
	c.Close()
	c, err = Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := fetch(dirA); id != idA {
		t.Errorf("after a restart %s", id)
	}
	bundle, err = workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr("unix://"+filepath.Join(dirA, spiffe.SocketName)))
	if err != nil || !bytes.Equal(bundle.Bundles()[0].X509Authorities()[0].Raw, caBefore) {
		t.Errorf("the CA after a restart is another: %v", err)
	}

	// Gone with its container.
	pa.Kill()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dirA, spiffe.SocketName)); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spiffe.sock stays after its container is gone")
		}
	}

	// The audit log: issuances, and b's refusal counted in b's one line.
	c.Close()
	entries := auditEntries(t, opts.API.AuditPath)
	var x509, jwt, refused int
	for _, e := range entries {
		switch e.Event {
		case "spiffe-x509-issued":
			x509++
		case "spiffe-jwt-issued":
			jwt++
		case "refused":
			if e.Fields["identity"] == "client" && strings.Contains(e.Fields["statuses"], "429:") {
				refused++
			}
		}
	}
	if x509 < 4 || jwt != 1 || refused != 1 {
		t.Errorf("audit log: %d x509, %d jwt, %d refusal lines for client; want ≥ 4, 1, 1", x509, jwt, refused)
	}
}

// findKey is the registration key of container id in c.
func findKey(c *Containers, id string) control.Registration {
	for k := range c.byKey {
		if k.ID == id {
			return k
		}
	}
	return control.Registration{}
}

func jwtParams(aud string) jwtsvid.Params { return jwtsvid.Params{Audience: aud} }

// auditEntries reads the events of the audit log at path.
func auditEntries(t *testing.T, path string) []audit.Entry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var e audit.Entry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}
