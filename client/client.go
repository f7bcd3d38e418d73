// SPDX-License-Identifier: Apache-2.0

// Package client is what an application in a container imports to use the
// northstar agent's API on its own socket, /run/northstar/api/api.sock
// (DESIGN.md §9): who am I, tokens for a peer and their verification,
// signatures under the container's own key, public keys, and pairwise keys.
//
//	c := client.New("")
//	tok, err := c.Token(ctx, "broker", "mqtt", time.Minute)   // in the MQTT client's container
//	v, err := c.VerifyToken(ctx, tok.Token, "client", "mqtt") // in the MQTT broker's container
//	if err == nil && v.Valid { ... }
//
// The agent knows who calls by the socket: there is nothing to configure
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

// Error is an answer of the agent other than 200.
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

// Identity is who this container is to the agent.
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
// ttl (0: the agent's default).
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

// Verification is the agent's verdict on a token.
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

// Sign signs data with this container's key for app ("" for none): the
// signature passes only for that app and the key's generation, which it
// returns (see api.SignedMessage for what is signed).
func (c *Client) Sign(ctx context.Context, app string, data []byte) ([]byte, uint64, error) {
	var v struct {
		Signature  []byte `json:"signature"`
		Generation uint64 `json:"generation"`
	}
	in := struct {
		Data []byte `json:"data"`
		App  string `json:"app,omitempty"`
	}{data, app}
	err := c.call(ctx, http.MethodPost, "/v1/sign", &in, &v)
	return v.Signature, v.Generation, err
}

// VerifySignature reports whether sig is sender's signature of data for
// app, made with the key of generation (0: the current one; signatures of
// the current and the previous generation verify).
func (c *Client) VerifySignature(ctx context.Context, sender, app string, generation uint64, data, sig []byte) (bool, error) {
	var v struct{ Valid bool }
	in := struct {
		Sender     string `json:"sender"`
		Data       []byte `json:"data"`
		Signature  []byte `json:"signature"`
		App        string `json:"app,omitempty"`
		Generation uint64 `json:"generation,omitempty"`
	}{sender, data, sig, app, generation}
	err := c.call(ctx, http.MethodPost, "/v1/signature/verify", &in, &v)
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

// TokenSource hands out tokens for one audience and app, a new one for
// every call: a token verifies once, so handing the same one out twice
// would have the peer refuse the second use as replayed.
//
// It keeps one token ready: after each handout it asks for the next in the
// background, so a caller waits for the agent only when it asks faster
// than a token round trip. A ready token is dropped unused once 80% of its
// lifetime has passed, so what Token returns always has at least a fifth
// of its lifetime left (renewal at 80% is for what lives on a lifetime).
type TokenSource struct {
	c             *Client
	audience, app string
	ttl           time.Duration

	mu       sync.Mutex    // guards next, renew, inFlight
	next     *Token        // the token ready for the next call, if any
	renew    time.Time     // when next stops being handed out
	inFlight chan struct{} // closed when the background request ends; nil if none
}

// NewTokenSource returns a TokenSource of tokens that live ttl (0: the
// agent's default).
func (c *Client) NewTokenSource(audience, app string, ttl time.Duration) *TokenSource {
	return &TokenSource{c: c, audience: audience, app: app, ttl: ttl}
}

// Token returns a token never handed out before.
func (ts *TokenSource) Token(ctx context.Context) (*Token, error) {
	for {
		ts.mu.Lock()
		if t := ts.next; t != nil {
			ts.next = nil
			fresh := time.Now().Before(ts.renew)
			ts.prefetchLocked()
			ts.mu.Unlock()
			if fresh {
				return t, nil
			}
			continue // too old: the one asked for just now, or a new one
		}
		wait := ts.inFlight
		ts.mu.Unlock()
		if wait == nil {
			break
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ts.mu.Lock()
		empty := ts.next == nil
		ts.mu.Unlock()
		if empty {
			break // the background request failed: ask here, and see why
		}
	}
	t, _, err := ts.ask(ctx)
	if err != nil {
		return nil, err
	}
	ts.mu.Lock()
	ts.prefetchLocked()
	ts.mu.Unlock()
	return t, nil
}

// ask requests a token now and returns it with the time to stop handing
// it out.
func (ts *TokenSource) ask(ctx context.Context) (*Token, time.Time, error) {
	start := time.Now()
	t, err := ts.c.Token(ctx, ts.audience, ts.app, ts.ttl)
	if err != nil {
		return nil, time.Time{}, err
	}
	return t, start.Add(t.ExpiresAt.Sub(start) * 8 / 10), nil
}

// prefetchLocked starts asking for the next token unless one is ready or
// on its way. The caller holds ts.mu.
func (ts *TokenSource) prefetchLocked() {
	if ts.next != nil || ts.inFlight != nil {
		return
	}
	done := make(chan struct{})
	ts.inFlight = done
	go func() {
		defer close(done)
		t, renew, err := ts.ask(context.Background()) // bounded by the client's timeout
		ts.mu.Lock()
		defer ts.mu.Unlock()
		ts.inFlight = nil
		if err == nil {
			ts.next, ts.renew = t, renew
		}
	}()
}
