// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/client"
)

// TestBenchSPIFFE: the Workload API's calls against a plain GET
// /v1/identity on the same container, interleaved, through the clients an
// application uses (go-spiffe's workloadapi.Client, package client), each
// keeping its connection: FetchX509SVID is a stream opened, its first
// message (a new key and certificate) parsed, and closed; FetchJWTSVID one
// unary call. The socket's rate limit is raised out of the way: these rows
// measure the work, not the limiter.
func TestBenchSPIFFE(t *testing.T) {
	requires(t, "runc")
	sock := agentSocket(t, nil)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\nrate = 1000000\nburst = 1000000\n[spiffe]\ntrust_domain = \"example.org\"\n", sock), nil)
	startAgent(t, e, sock)
	id := startDetached(t, e, spiffeBundle(t, e, "client", "sleep 600"))
	dir := registeredDir(t, sock, id)
	ctx := context.Background()
	api := client.New(filepath.Join(dir, "api.sock"))
	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+filepath.Join(dir, spiffe.SocketName)))
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	identity := func() error { _, err := api.Identity(ctx); return err }
	x509 := func() error { _, err := wl.FetchX509SVID(ctx); return err }
	jwt := func() error { _, err := wl.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "server"}); return err }
	const rounds = 1000
	for _, row := range []struct {
		what string
		call func() error
	}{
		{"FetchX509SVID (go-spiffe: stream, new P-256 key and certificate, parsed)", x509},
		{"FetchJWTSVID (go-spiffe: one ES256 token)", jwt},
	} {
		reportRatioOnly(row.what+" / GET /v1/identity on the same container", interleave(t, rounds, identity, row.call))
	}
}
