// SPDX-License-Identifier: Apache-2.0

// Package token makes and checks the agent's sender-bound one-time tokens
// (DESIGN.md §9, design note §4.2).
//
// A token carries its sender (the identity of the API socket it was asked
// on, never a claim of the caller), its audience, the app, an expiry, a
// random nonce and the generation whose key signs it, under HMAC-SHA256.
// Only the audience can verify it (the verifier passes the identity of its
// own socket), each token verifies once (its Memory, package replay,
// remembers the nonce until the token expires), and a token minted before
// a rotation verifies until it expires (the caller keeps the previous
// generation's key).
//
// The one implementation of §4.2 that existed (ESR Labs' northstar) let the
// verifier name the sender it expected from nowhere, had no replay
// protection and lost every token on restart; this fixes the first two,
// the agent keeps its keys across restarts and package replay its memory.
//
// Wire form: base64url (no padding) of
//
//	0x01 | u8 len sender | sender | u8 len audience | audience | u8 len app | app
//	     | u64 expiry (unix seconds) | u64 generation | 16-byte nonce | 32-byte HMAC
//
// Identities are at most 253 bytes and apps 64, so a token is at most ~800
// characters; with the identities we see (tens of bytes) it stays well
// under the 512 characters of the contract, and Mint refuses a longer one.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/northstar-oci/northstar/agent/replay"
)

// Limits of the contract.
const (
	MaxIdentity = 253
	MaxApp      = 64
	MaxLen      = 512 // characters of the encoded token
	NonceSize   = 16
	version     = 1
)

// Reason is why a token did not verify; the strings are the API's.
type Reason string

const (
	Malformed     Reason = "malformed"
	BadSignature  Reason = "bad-signature"
	Expired       Reason = "expired"
	Replayed      Reason = "replayed"
	WrongAudience Reason = "wrong-audience"
	WrongSender   Reason = "wrong-sender"
	WrongApp      Reason = "wrong-app"
	// RevokedSender: the container that minted it was cut off
	// (northstarctl rotate --revoke) after it did.
	RevokedSender Reason = "revoked"
)

// Claims are what a token says.
type Claims struct {
	Sender, Audience, App string
	Expiry                time.Time
	Generation            uint64
	Nonce                 [NonceSize]byte
}

// ID names a token in logs and the audit log without revealing it: the
// first 8 bytes of the SHA-256 of its nonce, in hex.
func (c *Claims) ID() string {
	h := sha256.Sum256(c.Nonce[:])
	return fmt.Sprintf("%x", h[:8])
}

// Mint makes a token for c (its nonce is filled in here) under key, the
// token key of c.Generation.
func Mint(c *Claims, key []byte) (string, error) {
	if err := checkField("sender", c.Sender, MaxIdentity); err != nil {
		return "", err
	}
	if err := checkField("audience", c.Audience, MaxIdentity); err != nil {
		return "", err
	}
	if err := checkField("app", c.App, MaxApp); err != nil {
		return "", err
	}
	if _, err := rand.Read(c.Nonce[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	body := c.marshal()
	tok := base64.RawURLEncoding.EncodeToString(append(body, mac(key, body)...))
	if len(tok) > MaxLen {
		return "", fmt.Errorf("token would be %d characters, more than %d: shorten the identities or the app", len(tok), MaxLen)
	}
	return tok, nil
}

func checkField(what, v string, max int) error {
	if v == "" || len(v) > max {
		return fmt.Errorf("%s must be 1-%d bytes, not %d", what, max, len(v))
	}
	return nil
}

func (c *Claims) marshal() []byte {
	b := []byte{version}
	for _, f := range []string{c.Sender, c.Audience, c.App} {
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(c.Expiry.Unix()))
	b = binary.BigEndian.AppendUint64(b, c.Generation)
	return append(b, c.Nonce[:]...)
}

func mac(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// Parse decodes a token without checking its MAC (Verify does).
func Parse(tok string) (*Claims, []byte, []byte, error) {
	if len(tok) > MaxLen {
		return nil, nil, nil, errors.New("too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, nil, nil, errors.New("not base64url")
	}
	if len(raw) < 1+3+16+NonceSize+sha256.Size || raw[0] != version {
		return nil, nil, nil, errors.New("not a version 1 token")
	}
	body, sum := raw[:len(raw)-sha256.Size], raw[len(raw)-sha256.Size:]
	c := &Claims{}
	p := body[1:]
	var fields [3]string
	for i := range fields {
		if len(p) < 1 || len(p) < 1+int(p[0]) || p[0] == 0 {
			return nil, nil, nil, errors.New("truncated")
		}
		fields[i], p = string(p[1:1+int(p[0])]), p[1+int(p[0]):]
	}
	if len(p) != 16+NonceSize {
		return nil, nil, nil, errors.New("bad length")
	}
	c.Sender, c.Audience, c.App = fields[0], fields[1], fields[2]
	c.Expiry = time.Unix(int64(binary.BigEndian.Uint64(p)), 0).UTC()
	c.Generation = binary.BigEndian.Uint64(p[8:])
	copy(c.Nonce[:], p[16:])
	return c, body, sum, nil
}

// Memory remembers the tokens that were used (package replay). Use
// returns nil the first time, ErrReplayed after that, and any other error
// when it could not record the use: the token is then not valid.
type Memory interface {
	Use(audience, sender string, nonce [NonceSize]byte, expiry time.Time) error
}

// ErrReplayed is what Memory.Use returns for a token used before.
var ErrReplayed = replay.ErrReplayed

// Verifier checks tokens; its Memory remembers those it accepted. It is
// safe for concurrent use.
type Verifier struct {
	// Key returns the token key of a generation, or nil if the verifier
	// does not (or no longer) know it.
	Key func(generation uint64) []byte
	// Memory remembers used tokens.
	Memory Memory
	// Revoked, if set, reports whether tokens sender minted in a
	// generation were revoked (northstarctl rotate --revoke cut the
	// container off).
	Revoked func(sender string, generation uint64) bool
	// Now is the clock (tests set it).
	Now func() time.Time
}

// Verify checks tok for a verifier whose socket identity is audience,
// expecting it from sender for app. It returns the claims and "" when the
// token is valid (and marks it used), or the reason it is not; an error
// when the memory could not record the use (the token is not valid, and
// may be tried again).
func (v *Verifier) Verify(tok, audience, sender, app string) (*Claims, Reason, error) {
	c, body, sum, err := Parse(tok)
	if err != nil {
		return nil, Malformed, nil
	}
	key := v.Key(c.Generation)
	if key == nil || !hmac.Equal(sum, mac(key, body)) {
		return nil, BadSignature, nil
	}
	now := v.now()
	switch {
	case c.Audience != audience:
		return c, WrongAudience, nil
	case !now.Before(c.Expiry):
		return c, Expired, nil
	case c.Sender != sender:
		return c, WrongSender, nil
	case c.App != app:
		return c, WrongApp, nil
	case v.Revoked != nil && v.Revoked(c.Sender, c.Generation):
		return c, RevokedSender, nil
	}
	switch err := v.Memory.Use(audience, sender, c.Nonce, c.Expiry); {
	case errors.Is(err, ErrReplayed):
		return c, Replayed, nil
	case err != nil:
		return c, "", err
	}
	return c, "", nil
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}
