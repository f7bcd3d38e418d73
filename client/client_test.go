// SPDX-License-Identifier: Apache-2.0

package client

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/agent/token"
	"github.com/northstar-oci/northstar/hook/entry"
)

type oneGeneration struct {
	root *keys.Root
	v    *token.Verifier
}

func (b *oneGeneration) Current() (*keys.Root, uint64, uint64) { return b.root, 1, 0 }
func (b *oneGeneration) Verifier() *token.Verifier             { return b.v }
func (b *oneGeneration) DefaultTTL() time.Duration             { return time.Minute }
func (b *oneGeneration) Audit(string, map[string]string) error { return nil }

// socket serves the API of identity and returns a client of it.
func socket(t *testing.T, a api.Agent, identity string) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(identity, a, api.Limits{})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return New(sock)
}

// clientAndServer are clients of two sockets, identities client and
// server, of one agent's API.
func clientAndServer(t *testing.T) (*Client, *Client) {
	t.Helper()
	root, err := keys.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := &oneGeneration{root: root}
	b.v = &token.Verifier{Key: func(g uint64) []byte { return root.TokenKey(g) }, Memory: replay.New(replay.Limits{})}
	return socket(t, b, "client"), socket(t, b, "server")
}

func TestClient(t *testing.T) {
	ctx := context.Background()
	cl, br := clientAndServer(t)

	if id, err := cl.Identity(ctx); err != nil || id.Identity != "client" || id.Generation != 1 {
		t.Fatalf("Identity = %+v, %v", id, err)
	}
	ts := cl.NewTokenSource("server", "mqtt", time.Minute)
	tok, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := br.VerifyToken(ctx, tok.Token, "client", "mqtt"); err != nil || !v.Valid || v.Sender != "client" {
		t.Fatalf("VerifyToken = %+v, %v", v, err)
	}
	if v, _ := br.VerifyToken(ctx, tok.Token, "client", "mqtt"); v.Valid || v.Reason != "replayed" {
		t.Errorf("second VerifyToken = %+v", v)
	}
	// Every use its own token, each verifying once.
	seen := map[string]bool{tok.Token: true}
	for i := range 20 {
		next, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[next.Token] {
			t.Fatalf("call %d handed out a token handed out before", i+2)
		}
		seen[next.Token] = true
		if v, err := br.VerifyToken(ctx, next.Token, "client", "mqtt"); err != nil || !v.Valid {
			t.Fatalf("token %d from the source: %+v, %v", i+2, v, err)
		}
	}
	sig, gen, err := cl.Sign(ctx, "mqtt", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := br.VerifySignature(ctx, "client", "mqtt", gen, []byte("hello"), sig); err != nil || !ok {
		t.Errorf("VerifySignature = %v, %v", ok, err)
	}
	if ok, err := br.VerifySignature(ctx, "client", "http", gen, []byte("hello"), sig); err != nil || ok {
		t.Errorf("VerifySignature for another app = %v, %v", ok, err)
	}
	k, err := br.Keys(ctx, "client")
	if err != nil || len(k.Ed25519) != 32 || len(k.X25519) != 32 {
		t.Errorf("Keys = %+v, %v", k, err)
	}
	ab, _ := cl.Derive(ctx, "server", "mqtt")
	ba, _ := br.Derive(ctx, "client", "mqtt")
	if len(ab) != 32 || !bytes.Equal(ab, ba) {
		t.Errorf("Derive: %x vs %x", ab, ba)
	}
	var apiErr *Error
	if _, err := cl.Token(ctx, "bad audience", "mqtt", 0); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("a bad request: %v", err)
	}
	if _, err := New(filepath.Join(t.TempDir(), "none.sock")).Identity(ctx); err == nil {
		t.Error("no socket, no error")
	}
}

// TestTokenSourceDropsAgedTokens: the token kept ready is not handed out
// once 80% of its lifetime has passed, and concurrent callers each get
// their own token.
func TestTokenSourceDropsAgedTokens(t *testing.T) {
	ctx := context.Background()
	cl, br := clientAndServer(t)
	ts := cl.NewTokenSource("server", "mqtt", 2*time.Second)
	first, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1700 * time.Millisecond) // past 80% of the ready token's 2 s
	next, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(next.ExpiresAt); left < 400*time.Millisecond {
		t.Errorf("handed out a token with %v of its 2 s left", left)
	}
	if next.Token == first.Token {
		t.Fatal("the same token twice")
	}

	var mu sync.Mutex
	got := map[string]bool{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := ts.Token(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if got[tok.Token] {
				t.Error("two concurrent callers got the same token")
			}
			got[tok.Token] = true
		}()
	}
	wg.Wait()
	for tok := range got {
		if v, err := br.VerifyToken(ctx, tok, "client", "mqtt"); err != nil || !v.Valid {
			t.Errorf("a concurrent caller's token: %+v, %v", v, err)
		}
	}
}

func TestSPIFFEPath(t *testing.T) {
	p, err := SPIFFEPath("default/mqtt-0/broker")
	if err != nil || p != "/default/mqtt-0/broker" {
		t.Fatalf("SPIFFEPath = %q, %v", p, err)
	}
	if id, err := IdentityOfSPIFFEPath("/svc_40example.org_3A443"); err != nil || id != "svc@example.org:443" {
		t.Errorf("IdentityOfSPIFFEPath = %q, %v", id, err)
	}
	if _, err := IdentityOfSPIFFEPath("/_3a"); err == nil {
		t.Error("a path SPIFFEPath never writes decoded")
	}
}

// TestDefaultSPIFFEEndpointIsTheShims: what applications default to is
// what the shim puts in SPIFFE_ENDPOINT_SOCKET.
func TestDefaultSPIFFEEndpointIsTheShims(t *testing.T) {
	if DefaultSPIFFEEndpoint != entry.SPIFFEEndpoint {
		t.Errorf("client says %s, the shim %s", DefaultSPIFFEEndpoint, entry.SPIFFEEndpoint)
	}
}
