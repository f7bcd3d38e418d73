// Package api is the agent's HTTP/1.1 + JSON API (DESIGN.md §9), served on
// one unix socket per container. The socket a request arrives on is the
// caller's identity: a Handler is made for one identity and never asks the
// caller who it is, so no PID or cgroup lookup can be raced or fooled.
//
//	GET  /v1/identity            {"identity", "generation"}
//	POST /v1/token               {"audience", "app", "ttl_seconds"} -> {"token", "expires_at"}
//	POST /v1/token/verify        {"token", "sender", "app"} -> {"valid", ...} or {"valid": false, "reason"}
//	POST /v1/sign                {"data"} -> {"signature", "identity", "generation"}
//	POST /v1/signature/verify    {"sender", "data", "signature"} -> {"valid"}
//	GET  /v1/keys/{identity}     {"identity", "ed25519", "x25519", "generation"}
//	POST /v1/derive              {"peer", "app"} -> {"key": 64 hex}
//
// Bodies are at most 64 KiB, unknown fields are refused, binary data is
// standard base64, and errors are non-2xx with {"error": "..."}: 400
// malformed, 404 unknown path, 405 wrong method, 413 too large.
package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/northstar-oci/northstar/agent/identity"
	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/token"
)

// MaxBody bounds every request body.
const MaxBody = 64 << 10

// MaxTTL bounds a token's lifetime.
const MaxTTL = time.Hour

// Agent is what the handlers need from the agent: the current keys and
// generation, the verifier of tokens, and an audit trail. Implementations
// are safe for concurrent use.
type Agent interface {
	// Current returns the root key and the generation in force.
	Current() (*keys.Root, uint64)
	// Verifier checks tokens (it knows earlier generations' keys).
	Verifier() *token.Verifier
	// DefaultTTL is the token lifetime when a request names none.
	DefaultTTL() time.Duration
	// Audit records an event; it must never receive a token or a key.
	Audit(event string, fields map[string]string)
}

// ValidIdentity reports whether s may name a container (identity.Valid).
func ValidIdentity(s string) bool { return identity.Valid(s) }

// maxApp is the longest app name. An app name is 1-64 bytes of
// [A-Za-z0-9._:@/-]: an identity's characters, shorter.
const maxApp = 64

// validApp reports whether s may name an app.
func validApp(s string) bool { return len(s) <= maxApp && identity.Valid(s) }

// Handler serves the API for the container whose identity is identity.
func Handler(identity string, a Agent) http.Handler {
	h := &handler{identity: identity, a: a}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/identity", h.only(http.MethodGet, h.getIdentity))
	mux.HandleFunc("/v1/token", h.only(http.MethodPost, h.postToken))
	mux.HandleFunc("/v1/token/verify", h.only(http.MethodPost, h.verifyToken))
	mux.HandleFunc("/v1/sign", h.only(http.MethodPost, h.sign))
	mux.HandleFunc("/v1/signature/verify", h.only(http.MethodPost, h.verifySignature))
	mux.HandleFunc("/v1/keys/", h.only(http.MethodGet, h.getKeys))
	mux.HandleFunc("/v1/derive", h.only(http.MethodPost, h.derive))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "unknown path")
	})
	return mux
}

type handler struct {
	identity string
	a        Agent
}

// apiError is an error with its HTTP status.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func bad(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func (h *handler) only(method string, fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			h.fail(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed, use "+method)
			return
		}
		v, err := fn(r)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				h.fail(w, r, ae.status, ae.msg)
			} else {
				h.fail(w, r, http.StatusInternalServerError, err.Error())
			}
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h.a.Audit("refused", map[string]string{"identity": h.identity, "path": r.URL.Path, "status": strconv.Itoa(status), "error": msg})
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads one JSON object of type T from the body: at most MaxBody
// bytes, no unknown fields, nothing after it.
func decode[T any](r *http.Request) (*T, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, bad("read body: %v", err)
	}
	if len(data) > MaxBody {
		return nil, &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBody)}
	}
	return DecodeRequest[T](data)
}

// DecodeRequest is the strict JSON decoding of a request body.
func DecodeRequest[T any](data []byte) (*T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, bad("malformed JSON: %v", err)
	}
	if dec.More() {
		return nil, bad("malformed JSON: more than one value")
	}
	return &v, nil
}

// IdentityResponse answers GET /v1/identity.
type IdentityResponse struct {
	Identity   string `json:"identity"`
	Generation uint64 `json:"generation"`
}

func (h *handler) getIdentity(*http.Request) (any, error) {
	_, gen := h.a.Current()
	return &IdentityResponse{Identity: h.identity, Generation: gen}, nil
}

// TokenRequest is POST /v1/token.
type TokenRequest struct {
	Audience   string `json:"audience"`
	App        string `json:"app"`
	TTLSeconds int64  `json:"ttl_seconds"`
}

func (h *handler) postToken(r *http.Request) (any, error) {
	req, err := decode[TokenRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Audience) || !validApp(req.App) {
		return nil, bad("audience must be an identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	ttl := h.a.DefaultTTL()
	if req.TTLSeconds != 0 {
		if req.TTLSeconds < 1 || req.TTLSeconds > int64(MaxTTL/time.Second) {
			return nil, bad("ttl_seconds must be 1-%d", int64(MaxTTL/time.Second))
		}
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	_, gen := h.a.Current()
	c := &token.Claims{Sender: h.identity, Audience: req.Audience, App: req.App, Generation: gen,
		Expiry: time.Now().Add(ttl).Truncate(time.Second)}
	// The verifier's key for gen: derived once per generation, not per
	// token (a derivation was a fifth of a token's time, and left the root
	// key in HKDF's garbage each time).
	key := h.a.Verifier().Key(gen)
	if key == nil {
		return nil, &apiError{http.StatusServiceUnavailable, "no token key for the current generation"}
	}
	tok, err := token.Mint(c, key)
	if err != nil {
		return nil, bad("%v", err)
	}
	h.a.Audit("token-issued", map[string]string{"sender": h.identity, "audience": c.Audience, "app": c.App,
		"expires": c.Expiry.UTC().Format(time.RFC3339), "token_id": c.ID()})
	return &TokenResponse{Token: tok, ExpiresAt: c.Expiry.UTC().Format(time.RFC3339)}, nil
}

// TokenResponse answers POST /v1/token. The answers are structs, not
// maps: encoding a map sorts its keys by reflection, a measurable part of
// a token round trip.
type TokenResponse struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

// VerifyRequest is POST /v1/token/verify.
type VerifyRequest struct {
	Token  string `json:"token"`
	Sender string `json:"sender"`
	App    string `json:"app"`
}

func (h *handler) verifyToken(r *http.Request) (any, error) {
	req, err := decode[VerifyRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Sender) || !validApp(req.App) {
		return nil, bad("sender must be an identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	// The audience is this socket's identity: only it can use the token.
	c, reason, err := h.a.Verifier().Verify(req.Token, h.identity, req.Sender, req.App)
	if err != nil {
		return nil, &apiError{http.StatusServiceUnavailable, err.Error()}
	}
	fields := map[string]string{"verifier": h.identity, "sender": req.Sender, "app": req.App, "result": "valid"}
	if c != nil {
		fields["token_id"] = c.ID()
		// With the expiry, a restarted agent knows how long to remember
		// the token as used (registry.Open reads it back).
		fields["expires"] = c.Expiry.UTC().Format(time.RFC3339)
	}
	if reason != "" {
		fields["result"] = string(reason)
		h.a.Audit("token-verified", fields)
		return &VerifyResponse{Reason: reason}, nil
	}
	h.a.Audit("token-verified", fields)
	return &VerifyResponse{Valid: true, Sender: c.Sender, App: c.App, ExpiresAt: c.Expiry.UTC().Format(time.RFC3339)}, nil
}

// VerifyResponse answers POST /v1/token/verify: valid with the claims, or
// not valid with the reason.
type VerifyResponse struct {
	Valid     bool         `json:"valid"`
	Reason    token.Reason `json:"reason,omitempty"`
	Sender    string       `json:"sender,omitempty"`
	App       string       `json:"app,omitempty"`
	ExpiresAt string       `json:"expires_at,omitempty"`
}

// SignRequest is POST /v1/sign.
type SignRequest struct {
	Data []byte `json:"data"` // standard base64
}

func (h *handler) sign(r *http.Request) (any, error) {
	req, err := decode[SignRequest](r)
	if err != nil {
		return nil, err
	}
	root, gen := h.a.Current()
	priv := root.Ed25519(h.identity, gen)
	defer clear(priv)
	h.a.Audit("sign", map[string]string{"identity": h.identity, "generation": strconv.FormatUint(gen, 10)})
	return map[string]any{"signature": ed25519.Sign(priv, req.Data), "identity": h.identity, "generation": gen}, nil
}

// SignatureRequest is POST /v1/signature/verify.
type SignatureRequest struct {
	Sender     string `json:"sender"`
	Data       []byte `json:"data"`
	Signature  []byte `json:"signature"`
	Generation uint64 `json:"generation,omitempty"` // default: the current one
}

func (h *handler) verifySignature(r *http.Request) (any, error) {
	req, err := decode[SignatureRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Sender) {
		return nil, bad("sender is not an identity")
	}
	root, gen := h.a.Current()
	if req.Generation != 0 {
		gen = req.Generation
	}
	priv := root.Ed25519(req.Sender, gen)
	defer clear(priv)
	ok := len(req.Signature) == ed25519.SignatureSize && ed25519.Verify(priv.Public().(ed25519.PublicKey), req.Data, req.Signature)
	return map[string]bool{"valid": ok}, nil
}

func (h *handler) getKeys(r *http.Request) (any, error) {
	who := r.URL.Path[len("/v1/keys/"):]
	if !ValidIdentity(who) {
		return nil, &apiError{http.StatusNotFound, "unknown identity"}
	}
	root, gen := h.a.Current()
	priv := root.Ed25519(who, gen)
	defer clear(priv)
	x := root.X25519(who, gen)
	return map[string]any{
		"identity":   who,
		"ed25519":    base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)),
		"x25519":     base64.StdEncoding.EncodeToString(x.PublicKey().Bytes()),
		"generation": gen,
	}, nil
}

// DeriveRequest is POST /v1/derive.
type DeriveRequest struct {
	Peer string `json:"peer"`
	App  string `json:"app"`
}

func (h *handler) derive(r *http.Request) (any, error) {
	req, err := decode[DeriveRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Peer) || !validApp(req.App) || req.Peer == h.identity {
		return nil, bad("peer must be another identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	root, gen := h.a.Current()
	k, err := root.Pairwise(h.identity, req.Peer, req.App, gen)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	h.a.Audit("derive", map[string]string{"identity": h.identity, "peer": req.Peer, "app": req.App})
	return map[string]string{"key": hex.EncodeToString(k)}, nil
}
