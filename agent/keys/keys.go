// SPDX-License-Identifier: Apache-2.0

// Package keys derives every key the agent hands out or uses from one
// root key: per identity and generation an Ed25519 signing key and
// an X25519 key, the HMAC key of a generation's tokens, and pairwise keys
// that two identities compute alike (DESIGN.md §9).
//
// The root key is 32 random bytes the agent keeps sealed like the
// lifecycle secret; nothing a container can read (its secret file
// included) lets it compute the root key or any key derived from it, so a
// compromised container can sign and derive only as itself.
//
// Every derivation is HKDF-SHA256 (RFC 5869) with a domain-separated,
// length-prefixed info string, so no two purposes, identities, apps or
// generations share a key. No primitive is written by hand: crypto/hkdf,
// crypto/ed25519 and crypto/ecdh do the work.
package keys

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// RootSize is the size of the agent root key.
const RootSize = 32

// ErrNotSerializable is returned by every marshaler of Root.
var ErrNotSerializable = errors.New("keys: the root key is never serialized")

// Root is the agent root key. Like secretfs.Secret it will not print,
// log or marshal itself. Its bytes live outside the Go heap, in a page of
// their own (see lockedPage), so the garbage collector never copies them
// and swap, core dumps and forked children never see them.
type Root struct {
	b      []byte // RootSize bytes at the start of the page
	locked bool
}

// NewRoot returns a fresh root key from the kernel CSPRNG.
func NewRoot() (*Root, error) {
	return LoadRoot(func(dst []byte) error {
		if _, err := rand.Read(dst); err != nil {
			return fmt.Errorf("read random: %w", err)
		}
		return nil
	})
}

// RootFromBytes copies a root key; the caller zeroes b.
func RootFromBytes(b []byte) (*Root, error) {
	if len(b) != RootSize {
		return nil, fmt.Errorf("root key is %d bytes, want %d", len(b), RootSize)
	}
	return LoadRoot(func(dst []byte) error { copy(dst, b); return nil })
}

// LoadRoot makes a root key whose bytes fill writes straight onto the key
// page (the agent reads them from a pipe), so they never pass through the
// Go heap. Every constructor goes through here.
func LoadRoot(fill func(dst []byte) error) (*Root, error) {
	page, locked, err := lockedPage()
	if err != nil {
		return nil, fmt.Errorf("root key page: %w", err)
	}
	r := &Root{b: page[:RootSize:RootSize], locked: locked}
	if err := fill(r.b); err != nil {
		r.Zero()
		return nil, err
	}
	return r, nil
}

// Locked reports whether the key's page is locked in memory. mlock is best
// effort: it fails when RLIMIT_MEMLOCK is exhausted, and the key then
// still stays out of core dumps and forked children.
func (r *Root) Locked() bool { return r.locked }

// Zero overwrites the key. The page stays mapped, so a derivation racing
// with Zero reads zeros rather than faulting; a Root is made once per
// agent process, so the page is not worth reclaiming.
func (r *Root) Zero() {
	if r != nil {
		clear(r.b)
	}
}

func (*Root) String() string                 { return "[redacted]" }
func (*Root) GoString() string               { return "keys.Root{[redacted]}" }
func (*Root) MarshalJSON() ([]byte, error)   { return nil, ErrNotSerializable }
func (*Root) MarshalText() ([]byte, error)   { return nil, ErrNotSerializable }
func (*Root) MarshalBinary() ([]byte, error) { return nil, ErrNotSerializable }

// Purposes, each its own HKDF domain.
const (
	purposeEd25519  = "northstar/v1/ed25519"
	purposeX25519   = "northstar/v1/x25519"
	purposeToken    = "northstar/v1/token-hmac"
	purposePairwise = "northstar/v1/pairwise"
)

// info builds an HKDF info string: the purpose, the generation and each
// part length-prefixed, so ("ab","c") and ("a","bc") never collide.
func info(purpose string, generation uint64, parts ...string) string {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, uint16(len(purpose)))
	b = append(b, purpose...)
	b = binary.BigEndian.AppendUint64(b, generation)
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return string(b)
}

func (r *Root) derive(size int, purpose string, generation uint64, parts ...string) []byte {
	// HKDF copies the key into its HMAC state on the heap for the length
	// of one call; that transient copy is the limit of keeping it off-heap.
	k, err := hkdf.Key(sha256.New, r.b, nil, info(purpose, generation, parts...), size)
	if err != nil {
		panic("keys: hkdf: " + err.Error()) // only for sizes beyond 255*32 bytes
	}
	return k
}

// Ed25519 returns identity's signing key for generation.
func (r *Root) Ed25519(identity string, generation uint64) ed25519.PrivateKey {
	seed := r.derive(ed25519.SeedSize, purposeEd25519, generation, identity)
	defer clear(seed)
	return ed25519.NewKeyFromSeed(seed)
}

// X25519 returns identity's key-agreement key for generation.
func (r *Root) X25519(identity string, generation uint64) *ecdh.PrivateKey {
	seed := r.derive(32, purposeX25519, generation, identity)
	defer clear(seed)
	k, err := ecdh.X25519().NewPrivateKey(seed)
	if err != nil {
		panic("keys: x25519: " + err.Error()) // any 32 bytes are a valid X25519 scalar
	}
	return k
}

// TokenKey returns the HMAC-SHA256 key of generation's tokens.
func (r *Root) TokenKey(generation uint64) []byte {
	return r.derive(32, purposeToken, generation)
}

// Pairwise returns the key a and b share for app in generation: X25519
// between a's private and b's public key, then HKDF over the shared secret
// with both identities in a fixed (sorted) order and the app, so that
// Pairwise(a, b) == Pairwise(b, a) and every other pair or app differs.
func (r *Root) Pairwise(a, b, app string, generation uint64) ([]byte, error) {
	if a == b {
		return nil, errors.New("pairwise key of an identity with itself")
	}
	priv := r.X25519(a, generation)
	shared, err := priv.ECDH(r.X25519(b, generation).PublicKey())
	if err != nil {
		return nil, fmt.Errorf("x25519: %w", err)
	}
	defer clear(shared)
	lo, hi := a, b
	if strings.Compare(lo, hi) > 0 {
		lo, hi = hi, lo
	}
	return hkdf.Key(sha256.New, shared, nil, info(purposePairwise, generation, lo, hi, app), 32)
}
