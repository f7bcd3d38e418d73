// Package client is what an application in a container imports to use the
// northstar broker's API on its own socket, /run/northstar/api/api.sock
// (DESIGN.md §9): who am I, tokens for a peer and their verification,
// signatures under the container's own key, public keys, and pairwise keys.
//
//	c := client.New("")
//	tok, err := c.Token(ctx, "broker", "mqtt", time.Minute)   // in the client container
//	v, err := c.VerifyToken(ctx, tok.Token, "client", "mqtt") // in the broker container
//	if err == nil && v.Valid { ... }
//
// The broker knows who calls by the socket: there is nothing to configure
// and nothing to prove.
package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// DefaultSocket is where every container finds its API socket.
const DefaultSocket = "/run/northstar/api/api.sock"

// Client talks to one API socket. It is safe for concurrent use.
type Client struct {
	http *http.Client
}

// New returns a client of the socket at path ("" for DefaultSocket).
func New(path string) *Client {
	if path == "" {
		path = DefaultSocket
	}
	return &Client{http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 4,
	}}}
}

// Error is an answer of the broker other than 200.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("northstar api: %d %s", e.Status, e.Message) }

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://northstar"+path, body)
	if err != nil {
		return err
	}
	rsp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("northstar api: %w", err)
	}
	defer rsp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(rsp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("northstar api: %w", err)
	}
	if rsp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(data, &e)
		return &Error{Status: rsp.StatusCode, Message: e.Error}
	}
	return json.Unmarshal(data, out)
}

// Identity is who this container is to the broker.
type Identity struct {
	Identity   string `json:"identity"`
	Generation uint64 `json:"generation"`
}

// Identity asks who this container is.
func (c *Client) Identity(ctx context.Context) (*Identity, error) {
	var v Identity
	return &v, c.call(ctx, http.MethodGet, "/v1/identity", nil, &v)
}

// Token is a one-time token for a peer.
type Token struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Token asks for a token that audience can verify, once, for app, valid for
// ttl (0: the broker's default).
func (c *Client) Token(ctx context.Context, audience, app string, ttl time.Duration) (*Token, error) {
	var v Token
	// Requests are structs, not maps: a map's keys are sorted by
	// reflection on every call, a measurable part of a token round trip.
	in := struct {
		Audience   string `json:"audience"`
		App        string `json:"app"`
		TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	}{Audience: audience, App: app}
	if ttl > 0 {
		in.TTLSeconds = int64((ttl + time.Second - 1) / time.Second)
	}
	return &v, c.call(ctx, http.MethodPost, "/v1/token", &in, &v)
}

// Verification is the broker's verdict on a token.
type Verification struct {
	Valid     bool      `json:"valid"`
	Reason    string    `json:"reason,omitempty"` // malformed, bad-signature, expired, replayed, wrong-audience, wrong-sender, wrong-app
	Sender    string    `json:"sender,omitempty"`
	App       string    `json:"app,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitempty"`
}

// VerifyToken checks that token was made for this container by sender for
// app. A valid token is used up.
func (c *Client) VerifyToken(ctx context.Context, token, sender, app string) (*Verification, error) {
	var v Verification
	in := struct {
		Token  string `json:"token"`
		Sender string `json:"sender"`
		App    string `json:"app"`
	}{token, sender, app}
	return &v, c.call(ctx, http.MethodPost, "/v1/token/verify", &in, &v)
}

// Sign signs data with this container's key; it returns the signature and
// the generation of the key.
func (c *Client) Sign(ctx context.Context, data []byte) ([]byte, uint64, error) {
	var v struct {
		Signature  []byte `json:"signature"`
		Generation uint64 `json:"generation"`
	}
	err := c.call(ctx, http.MethodPost, "/v1/sign", map[string][]byte{"data": data}, &v)
	return v.Signature, v.Generation, err
}

// VerifySignature reports whether sig is sender's signature of data.
func (c *Client) VerifySignature(ctx context.Context, sender string, data, sig []byte) (bool, error) {
	var v struct{ Valid bool }
	err := c.call(ctx, http.MethodPost, "/v1/signature/verify", map[string]any{"sender": sender, "data": data, "signature": sig}, &v)
	return v.Valid, err
}

// Keys are an identity's public keys.
type Keys struct {
	Identity   string `json:"identity"`
	Ed25519    []byte `json:"ed25519"`
	X25519     []byte `json:"x25519"`
	Generation uint64 `json:"generation"`
}

// Keys returns identity's public keys.
func (c *Client) Keys(ctx context.Context, identity string) (*Keys, error) {
	var v Keys
	return &v, c.call(ctx, http.MethodGet, "/v1/keys/"+url.PathEscape(identity), nil, &v)
}

// Derive returns the 32-byte key this container and peer share for app:
// the peer computes the same one, nobody else can.
func (c *Client) Derive(ctx context.Context, peer, app string) ([]byte, error) {
	var v struct{ Key string }
	if err := c.call(ctx, http.MethodPost, "/v1/derive", map[string]string{"peer": peer, "app": app}, &v); err != nil {
		return nil, err
	}
	return hex.DecodeString(v.Key)
}

// TokenSource hands out tokens for one audience and app, asking for a new
// one once 80% of the last one's lifetime has passed. Each token verifies
// only once: a caller that sends the same token twice gets it refused the
// second time, so use Fresh for each use when the peer verifies every time.
type TokenSource struct {
	c             *Client
	audience, app string
	ttl           time.Duration

	mu    sync.Mutex // guards tok, renew
	tok   *Token
	renew time.Time
}

// NewTokenSource returns a TokenSource.
func (c *Client) NewTokenSource(audience, app string, ttl time.Duration) *TokenSource {
	return &TokenSource{c: c, audience: audience, app: app, ttl: ttl}
}

// Token returns the current token, renewed at 80% of its lifetime.
func (ts *TokenSource) Token(ctx context.Context) (*Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok != nil && time.Now().Before(ts.renew) {
		return ts.tok, nil
	}
	return ts.fresh(ctx)
}

// Fresh returns a new token now.
func (ts *TokenSource) Fresh(ctx context.Context) (*Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.fresh(ctx)
}

func (ts *TokenSource) fresh(ctx context.Context) (*Token, error) {
	start := time.Now()
	t, err := ts.c.Token(ctx, ts.audience, ts.app, ts.ttl)
	if err != nil {
		return nil, err
	}
	ts.tok = t
	ts.renew = start.Add(t.ExpiresAt.Sub(start) * 8 / 10)
	return t, nil
}
