// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/store"
)

// spiffeOptions are options (a store in a temporary directory) with the
// Workload API of trust domain example.org.
func spiffeOptions(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	opts := options(hostStore(t, dir), dir)
	opts.API.SPIFFE = &SPIFFE{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), X509TTL: time.Hour, JWTTTL: time.Minute}
	return opts
}

// TestRevokeDuringAFlood: a container floods its spiffe.sock (calls
// refused at once, and calls held in the rate's tarpit) while the admin
// revokes it. Before, the revocation cleared the container's HTTP server
// while the Workload API's handlers still counted their refusals into it:
// a nil dereference in a gRPC handler, which gRPC does not recover, ended
// the agent for every container, before registry.json recorded the
// revocation. Run with -race: the handlers and the revocation share no
// unguarded field either.
func TestRevokeDuringAFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := spiffeOptions(t)
	// A rate the flood is far over: most calls wait in the tarpit.
	opts.API.Limits = api.Limits{Rate: 5, Burst: 5}
	log := &testenv.SyncBuffer{}
	opts.Log = log
	c, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, dirV, err := register(t, c, "victim", "victim", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	_, dirM, err := register(t, c, "mallory", "mallory", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}

	flood, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := grpc.NewClient("unix://"+filepath.Join(dirM, spiffe.SocketName), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			cl := workload.NewSpiffeWorkloadAPIClient(conn)
			for flood.Err() == nil {
				call := flood
				if i%2 == 0 { // with the header: into the tarpit, then refused
					call = metadata.AppendToOutgoingContext(flood, "workload.spiffe.io", "true")
				}
				_, _ = cl.ValidateJWTSVID(call, &workload.ValidateJWTSVIDRequest{Audience: "x", Svid: "junk"})
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the flood is on
	c.Revoke([]store.Revocation{{ID: "mallory", Generation: 2}})
	time.Sleep(300 * time.Millisecond) // and stays on against the closed socket
	stop()
	wg.Wait()

	saved, err := readSaved(opts.Dir)
	if err != nil {
		t.Fatal(err)
	}
	revoked := false
	for _, e := range saved.Containers {
		if e.ID == "mallory" {
			revoked = e.Revoked
		}
	}
	if !revoked {
		t.Error("registry.json does not record the revocation")
	}
	// Everyone else is still served.
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+filepath.Join(dirV, spiffe.SocketName))); err != nil {
		t.Errorf("the victim after the revocation: %v", err)
	}
	if got := identityAt(t, dirV); got != "victim" {
		t.Errorf("the victim's API after the revocation answers %q", got)
	}
}

// TestJunkValidationsAreCounted: a container validating junk JWT-SVIDs
// (and one valid one, again and again) as fast as it can writes O(1)
// audit lines per refusal interval: one counted refusal line, one line
// for the valid one. Before, each invalid validation was a line of its
// own (6.4 MB in 10 s).
func TestJunkValidationsAreCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := spiffeOptions(t)
	opts.API.Limits = api.Limits{Rate: 1e6, Burst: 1e6}
	c, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	_, dirM, err := register(t, c, "mallory", "mallory", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := workloadapi.WithAddr("unix://" + filepath.Join(dirM, spiffe.SocketName))
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtParams("mallory"), addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(dirM, spiffe.SocketName), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := workload.NewSpiffeWorkloadAPIClient(conn)
	call := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	const n = 2000
	for i := range n {
		svid := "junk"
		if i%2 == 0 {
			svid = jwt.Marshal()
		}
		_, _ = cl.ValidateJWTSVID(call, &workload.ValidateJWTSVIDRequest{Audience: "mallory", Svid: svid})
	}
	c.flushRefusals()
	c.Close()
	var validated, refused int
	for _, e := range auditEntries(t, opts.API.AuditPath) {
		switch {
		case e.Event == "spiffe-jwt-validated":
			validated++
		case e.Event == "refused" && e.Fields["identity"] == "mallory":
			refused++
			if e.Fields["count"] != fmt.Sprint(n/2) {
				t.Errorf("the refusal line counts %s, want %d", e.Fields["count"], n/2)
			}
		}
	}
	t.Logf("%d validations (half junk): %d validation lines, %d refusal lines", n, validated, refused)
	if validated != 1 || refused != 1 {
		t.Errorf("%d validation and %d refusal lines, want 1 and 1", validated, refused)
	}
}
