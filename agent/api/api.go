// SPDX-License-Identifier: Apache-2.0

// Package api is the agent's HTTP/1.1 + JSON API (DESIGN.md §9), served on
// one unix socket per container. The socket a request arrives on is the
// caller's identity: a Server is made for one identity and never asks the
// caller who it is, so no PID or cgroup lookup can be raced or fooled.
//
//	GET  /v1/identity            {"identity", "generation"}
//	POST /v1/token               {"audience", "app", "ttl_seconds"} -> {"token", "expires_at"}
//	POST /v1/token/verify        {"token", "sender", "app"} -> {"valid", ...} or {"valid": false, "reason"}
//	POST /v1/sign                {"data", "app"} -> {"signature", "identity", "generation", "app"}
//	POST /v1/signature/verify    {"sender", "data", "signature", "app", "generation"} -> {"valid"}
//	GET  /v1/keys/{identity}     {"identity", "ed25519", "x25519", "generation"}
//	POST /v1/derive              {"peer", "app"} -> {"key": 64 hex}
//
// Bodies are at most 64 KiB, unknown fields are refused, binary data is
// standard base64, and errors are non-2xx with {"error": "..."}: 400
// malformed, 404 unknown path, 405 wrong method, 413 too large, 429 over
// the container's rate (with Retry-After), 503 when the agent cannot
// record what it would answer (a full disk) or a memory is full.
//
// Every container may be the attacker, so every bound is the socket's own
// (server.go): its connections, its rate, its share of the memory of used
// tokens, its refusals counted into one audit line per interval.
package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
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
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/agent/token"
)

// MaxBody bounds every request body.
const MaxBody = 64 << 10

// MaxTTL bounds a token's lifetime.
const MaxTTL = time.Hour

// Agent is what the handlers need from the agent: the current keys and
// generations, the verifier of tokens, and an audit trail. Implementations
// are safe for concurrent use.
type Agent interface {
	// Current returns the root key, the generation in force and the one
	// before it (0: none).
	Current() (root *keys.Root, generation, previous uint64)
	// Verifier checks tokens (it knows earlier generations' keys).
	Verifier() *token.Verifier
	// DefaultTTL is the token lifetime when a request names none.
	DefaultTTL() time.Duration
	// Audit records an event; it must never receive a token or a key. An
	// error means the event is not recorded: the request it belongs to
	// fails (503), since what is not recorded must not be answered.
	Audit(event string, fields map[string]string) error
}

// ValidIdentity reports whether s may name a container (identity.Valid).
func ValidIdentity(s string) bool { return identity.Valid(s) }

// maxApp is the longest app name. An app name is 1-64 bytes of
// [A-Za-z0-9._:@/-]: an identity's characters, shorter.
const maxApp = 64

// validApp reports whether s may name an app.
func validApp(s string) bool { return len(s) <= maxApp && identity.Valid(s) }

// apiError is an error with its HTTP status.
type apiError struct {
	status     int
	msg        string
	retryAfter time.Duration // > 0: a Retry-After header (429, 503)
}

func (e *apiError) Error() string { return e.msg }

func bad(format string, a ...any) error {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// unavailable is a 503: the agent cannot answer this now.
func unavailable(msg string, retry time.Duration) error {
	return &apiError{status: http.StatusServiceUnavailable, msg: msg, retryAfter: retry}
}

// audited records an event and fails the request when it cannot.
func (s *Server) audited(event string, fields map[string]string) error {
	if err := s.a.Audit(event, fields); err != nil {
		return unavailable("the agent cannot record this request in its audit log ("+err.Error()+"); try again later", time.Second)
	}
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/identity", s.only(http.MethodGet, s.getIdentity))
	mux.HandleFunc("/v1/token", s.only(http.MethodPost, s.postToken))
	mux.HandleFunc("/v1/token/verify", s.only(http.MethodPost, s.verifyToken))
	mux.HandleFunc("/v1/sign", s.only(http.MethodPost, s.sign))
	mux.HandleFunc("/v1/signature/verify", s.only(http.MethodPost, s.verifySignature))
	mux.HandleFunc("/v1/keys/", s.only(http.MethodGet, s.getKeys))
	mux.HandleFunc("/v1/derive", s.only(http.MethodPost, s.derive))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, &apiError{status: http.StatusNotFound, msg: "unknown path"})
	})
	return mux
}

func (s *Server) only(method string, fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			s.fail(w, r, &apiError{status: http.StatusMethodNotAllowed, msg: "method " + r.Method + " not allowed, use " + method})
			return
		}
		v, err := fn(r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				ae = &apiError{status: http.StatusInternalServerError, msg: err.Error()}
			}
			s.fail(w, r, ae)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// fail answers an error. Refusals are counted, not audited one by one: a
// container that sends nothing but bad requests would otherwise fill the
// audit log and prune everyone's history (DESIGN.md §11).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	s.refusals.add(e.status, r.URL.Path, e.msg)
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, e.status, map[string]string{"error": e.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if k, ok := v.(*keyAnswer); ok {
		// net/http's write buffer holds a copy until it is reused; ours
		// goes now.
		_, _ = w.Write(k.b)
		clear(k.b)
		return
	}
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
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes", MaxBody)}
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

func (s *Server) getIdentity(*http.Request) (any, error) {
	_, gen, _ := s.a.Current()
	return &IdentityResponse{Identity: s.identity, Generation: gen}, nil
}

// TokenRequest is POST /v1/token.
type TokenRequest struct {
	Audience   string `json:"audience"`
	App        string `json:"app"`
	TTLSeconds int64  `json:"ttl_seconds"`
}

func (s *Server) postToken(r *http.Request) (any, error) {
	req, err := decode[TokenRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Audience) || !validApp(req.App) {
		return nil, bad("audience must be an identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	ttl := s.a.DefaultTTL()
	if req.TTLSeconds != 0 {
		if req.TTLSeconds < 1 || req.TTLSeconds > int64(MaxTTL/time.Second) {
			return nil, bad("ttl_seconds must be 1-%d", int64(MaxTTL/time.Second))
		}
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	_, gen, _ := s.a.Current()
	c := &token.Claims{Sender: s.identity, Audience: req.Audience, App: req.App, Generation: gen,
		Expiry: time.Now().Add(ttl).Truncate(time.Second)}
	// The verifier's key for gen: derived once per generation, not per
	// token (a derivation was a fifth of a token's time, and left the root
	// key in HKDF's garbage each time).
	key := s.a.Verifier().Key(gen)
	if key == nil {
		return nil, unavailable("no token key for the current generation", time.Second)
	}
	tok, err := token.Mint(c, key)
	if err != nil {
		return nil, bad("%v", err)
	}
	// Recorded before it is handed out: a token the log does not know
	// was never issued.
	if err := s.audited("token-issued", map[string]string{"sender": s.identity, "audience": c.Audience, "app": c.App,
		"expires": c.Expiry.UTC().Format(time.RFC3339), "token_id": c.ID()}); err != nil {
		return nil, err
	}
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

func (s *Server) verifyToken(r *http.Request) (any, error) {
	req, err := decode[VerifyRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Sender) || !validApp(req.App) {
		return nil, bad("sender must be an identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	// The audience is this socket's identity: only it can use the token.
	c, reason, err := s.a.Verifier().Verify(req.Token, s.identity, req.Sender, req.App)
	if err != nil {
		// Not remembered as used (a full memory, a full disk): not valid.
		var full *replay.FullError
		if errors.As(err, &full) {
			return nil, unavailable(err.Error(), full.Until)
		}
		return nil, unavailable("the agent cannot record the token as used ("+err.Error()+"); try again later", time.Second)
	}
	fields := map[string]string{"verifier": s.identity, "sender": req.Sender, "app": req.App, "result": "valid"}
	if c != nil {
		fields["token_id"] = c.ID()
		fields["expires"] = c.Expiry.UTC().Format(time.RFC3339)
	}
	if reason != "" {
		fields["result"] = string(reason)
	}
	// A valid token is used up by now (its use is in the replay journal),
	// so a line that cannot be written fails closed: the caller gets 503,
	// never "valid" without the record.
	if err := s.audited("token-verified", fields); err != nil {
		return nil, err
	}
	if reason != "" {
		return &VerifyResponse{Reason: reason}, nil
	}
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
	App  string `json:"app,omitempty"`
}

// SignResponse answers POST /v1/sign.
type SignResponse struct {
	Signature  []byte `json:"signature"`
	Identity   string `json:"identity"`
	Generation uint64 `json:"generation"`
	App        string `json:"app,omitempty"`
}

// SignedMessage is what a signature of the API signs: the data in a
// context of its own, so that a signature made for one app, generation or
// purpose never passes for another (a signature over the bare data would
// verify wherever the same bytes mean something else):
//
//	"northstar/v1/sign\x00" | u16 len(app) | app | u64 generation | data
//
// Anyone holding the sender's public key (GET /v1/keys) can check a
// signature with it over this message.
func SignedMessage(app string, generation uint64, data []byte) []byte {
	const context = "northstar/v1/sign\x00"
	m := make([]byte, 0, len(context)+2+len(app)+8+len(data))
	m = append(m, context...)
	m = binary.BigEndian.AppendUint16(m, uint16(len(app)))
	m = append(m, app...)
	m = binary.BigEndian.AppendUint64(m, generation)
	return append(m, data...)
}

func (s *Server) sign(r *http.Request) (any, error) {
	req, err := decode[SignRequest](r)
	if err != nil {
		return nil, err
	}
	if req.App != "" && !validApp(req.App) {
		return nil, bad("app must be 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	root, gen, _ := s.a.Current()
	if err := s.audited("sign", map[string]string{"identity": s.identity, "app": req.App, "generation": strconv.FormatUint(gen, 10)}); err != nil {
		return nil, err
	}
	priv := root.Ed25519(s.identity, gen)
	defer clear(priv)
	return &SignResponse{Signature: ed25519.Sign(priv, SignedMessage(req.App, gen, req.Data)), Identity: s.identity, Generation: gen, App: req.App}, nil
}

// SignatureRequest is POST /v1/signature/verify.
type SignatureRequest struct {
	Sender     string `json:"sender"`
	Data       []byte `json:"data"`
	Signature  []byte `json:"signature"`
	App        string `json:"app,omitempty"`
	Generation uint64 `json:"generation,omitempty"` // default: the current one
}

func (s *Server) verifySignature(r *http.Request) (any, error) {
	req, err := decode[SignatureRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Sender) || req.App != "" && !validApp(req.App) {
		return nil, bad("sender must be an identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	root, gen, prev := s.a.Current()
	if req.Generation != 0 {
		// Signatures of the generation in force and the one before it:
		// a key that was rotated out twice signs nothing any more.
		if req.Generation != gen && (prev == 0 || req.Generation != prev) {
			return map[string]bool{"valid": false}, nil
		}
		gen = req.Generation
	}
	// A signature of a sender revoked since is not one: what it signed
	// may be what it was revoked for (DESIGN.md §15).
	if v := s.a.Verifier(); v != nil && v.Revoked != nil && v.Revoked(req.Sender, gen) {
		return map[string]any{"valid": false, "reason": string(token.RevokedSender)}, nil
	}
	priv := root.Ed25519(req.Sender, gen)
	defer clear(priv)
	ok := len(req.Signature) == ed25519.SignatureSize && ed25519.Verify(priv.Public().(ed25519.PublicKey), SignedMessage(req.App, gen, req.Data), req.Signature)
	return map[string]bool{"valid": ok}, nil
}

func (s *Server) getKeys(r *http.Request) (any, error) {
	who := r.URL.Path[len("/v1/keys/"):]
	if !ValidIdentity(who) {
		return nil, &apiError{status: http.StatusNotFound, msg: "unknown identity"}
	}
	root, gen, _ := s.a.Current()
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

// keyAnswer is the answer of POST /v1/derive, {"key": "<64 hex>"}: it
// marshals itself into a buffer that clear zeroes once it is written, so
// the pairwise key does not stay behind on the heap as a hex string.
type keyAnswer struct{ b []byte }

func newKeyAnswer(key []byte) *keyAnswer {
	b := make([]byte, 0, len(`{"key":""}`+"\n")+2*len(key))
	b = append(b, `{"key":"`...)
	b = hex.AppendEncode(b, key)
	return &keyAnswer{b: append(b, "\"}\n"...)}
}

func (s *Server) derive(r *http.Request) (any, error) {
	req, err := decode[DeriveRequest](r)
	if err != nil {
		return nil, err
	}
	if !ValidIdentity(req.Peer) || !validApp(req.App) || req.Peer == s.identity {
		return nil, bad("peer must be another identity and app 1-64 characters of [A-Za-z0-9._:@/-]")
	}
	root, gen, _ := s.a.Current()
	if err := s.audited("derive", map[string]string{"identity": s.identity, "peer": req.Peer, "app": req.App}); err != nil {
		return nil, err
	}
	k, err := root.Pairwise(s.identity, req.Peer, req.App, gen)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	return newKeyAnswer(k), nil
}
