package client

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/broker/api"
	"github.com/northstar-oci/northstar/broker/keys"
	"github.com/northstar-oci/northstar/broker/token"
)

type oneGeneration struct {
	root *keys.Root
	v    *token.Verifier
}

func (b *oneGeneration) Current() (*keys.Root, uint64)   { return b.root, 1 }
func (b *oneGeneration) Verifier() *token.Verifier       { return b.v }
func (b *oneGeneration) DefaultTTL() time.Duration       { return time.Minute }
func (b *oneGeneration) Audit(string, map[string]string) {}

// socket serves the API of identity and returns a client of it.
func socket(t *testing.T, b api.Broker, identity string) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.Handler(identity, b)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return New(sock)
}

func TestClient(t *testing.T) {
	ctx := context.Background()
	root, _ := keys.NewRoot()
	b := &oneGeneration{root: root}
	b.v = &token.Verifier{Key: func(g uint64) []byte { return root.TokenKey(g) }}
	cl, br := socket(t, b, "client"), socket(t, b, "broker")

	if id, err := cl.Identity(ctx); err != nil || id.Identity != "client" || id.Generation != 1 {
		t.Fatalf("Identity = %+v, %v", id, err)
	}
	ts := cl.NewTokenSource("broker", "mqtt", time.Minute)
	tok, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := ts.Token(ctx); again.Token != tok.Token {
		t.Error("the token source renewed long before 80% of the lifetime")
	}
	if v, err := br.VerifyToken(ctx, tok.Token, "client", "mqtt"); err != nil || !v.Valid || v.Sender != "client" {
		t.Fatalf("VerifyToken = %+v, %v", v, err)
	}
	if v, _ := br.VerifyToken(ctx, tok.Token, "client", "mqtt"); v.Valid || v.Reason != "replayed" {
		t.Errorf("second VerifyToken = %+v", v)
	}
	if fresh, _ := ts.Fresh(ctx); fresh.Token == tok.Token {
		t.Error("Fresh returned the used token")
	}
	sig, _, err := cl.Sign(ctx, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := br.VerifySignature(ctx, "client", []byte("hello"), sig); err != nil || !ok {
		t.Errorf("VerifySignature = %v, %v", ok, err)
	}
	k, err := br.Keys(ctx, "client")
	if err != nil || len(k.Ed25519) != 32 || len(k.X25519) != 32 {
		t.Errorf("Keys = %+v, %v", k, err)
	}
	ab, _ := cl.Derive(ctx, "broker", "mqtt")
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
