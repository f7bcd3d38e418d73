// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/store"
)

// TestRevocationsStick: a revocation made while the agent is stopped (no
// live rotation) applies before the restarted agent serves any socket;
// the revoked id cannot register again, under any pid, until the admin
// lifts it, and the lift is audited; signatures and JWT-SVIDs the revoked
// sender made before verify as revoked, like its tokens.
func TestRevocationsStick(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := spiffeOptions(t)
	st := opts.Store
	gen := func() uint64 {
		rec, err := st.Current()
		if err != nil {
			t.Fatal(err)
		}
		return rec.Generation
	}
	c, err := Open(ctx, opts, gen)
	if err != nil {
		t.Fatal(err)
	}
	p := sleeper(t)
	_, dirM, err := register(t, c, "mallory", "mallory", p)
	if err != nil {
		t.Fatal(err)
	}
	sig := call(t, c, "mallory", "/v1/sign", `{"data":"aGk="}`)
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtParams("bob"), workloadapi.WithAddr("unix://"+filepath.Join(dirM, spiffe.SocketName)))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Revoked while the agent is stopped.
	time.Sleep(1100 * time.Millisecond) // the JWT-SVID's iat is in whole seconds
	if _, err := st.Rotate(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	c, err = Open(ctx, opts, gen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dirM, "api.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the revoked container's api.sock after the restart: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	if _, err := workloadapi.FetchX509SVID(short, workloadapi.WithAddr("unix://"+filepath.Join(dirM, spiffe.SocketName))); err == nil {
		t.Error("the revoked container gets an X.509-SVID after the restart")
	}
	cancelShort()

	// What it made before verifies as revoked.
	v := call(t, c, "bob", "/v1/signature/verify", fmt.Sprintf(`{"sender":"mallory","data":"aGk=","signature":%q,"generation":1}`, sig["signature"]))
	if v["valid"] != false || v["reason"] != "revoked" {
		t.Errorf("a signature the revoked sender made before: %v, want invalid, revoked", v)
	}
	_, dirB, err := register(t, c, "bob", "bob", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = workloadapi.ValidateJWTSVID(ctx, jwt.Marshal(), "bob", workloadapi.WithAddr("unix://"+filepath.Join(dirB, spiffe.SocketName)))
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a JWT-SVID of the revoked sender: %v, want revoked", err)
	}

	// The id stays revoked: a new process under it is refused, naming
	// the revocation and the lift.
	_, _, err = register(t, c, "mallory", "mallory", sleeper(t))
	if err == nil || !strings.Contains(err.Error(), "revoked") || !strings.Contains(err.Error(), "northstarctl revoke --lift mallory") {
		t.Fatalf("a registration of the revoked id: %v, want refused naming the lift", err)
	}
	if _, err := st.Lift(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	c.Revoke(mustCurrent(t, st).Revoked) // the agent's watch does this at the new record
	if _, _, err := register(t, c, "mallory", "mallory", sleeper(t)); err != nil {
		t.Fatalf("a registration after the lift: %v", err)
	}
	c.Close()
	lifted := 0
	for _, e := range auditEntries(t, opts.API.AuditPath) {
		if e.Event == "revocation-lifted" && e.Fields["id"] == "mallory" {
			lifted++
		}
	}
	if lifted != 1 {
		t.Errorf("%d audit lines of the lift, want 1", lifted)
	}
}

func mustCurrent(t *testing.T, st *store.Store) *store.Record {
	t.Helper()
	rec, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
