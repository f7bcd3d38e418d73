// SPDX-License-Identifier: Apache-2.0

// Package secretfs is the lifecycle secret in memory: the Secret type that
// refuses to be printed or marshaled, the sealed memfd that carries it on the
// runtime side, and the rules of the file a container sees (Dir, File, the
// read-only mode). Its subpackage mount puts that file inside a container;
// it is kept apart so that what only handles the secret (the store, the
// shim) does not link the mount and path-resolution code.
package secretfs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Size is the length of the lifecycle secret in bytes.
const Size = 32

// HexSize is the length of the secret as it appears inside a container: 64
// lowercase hex characters, no newline.
const HexSize = 2 * Size

// ErrNotSerializable is returned by every marshaler of Secret.
var ErrNotSerializable = errors.New("secretfs: the secret is never serialized")

// Secret is the 32-byte lifecycle secret. Its formatting and marshaling
// methods never reveal the bytes, so a secret that slips into a log line, an
// error or a JSON document shows up as "[redacted]" instead.
type Secret struct {
	b [Size]byte
}

// NewRandom returns a fresh secret from the kernel CSPRNG.
func NewRandom() (*Secret, error) {
	s := new(Secret)
	if _, err := rand.Read(s.b[:]); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	return s, nil
}

// FromBytes copies raw secret bytes; b must be exactly Size bytes long. The
// caller should zero b afterwards.
func FromBytes(b []byte) (*Secret, error) {
	if len(b) != Size {
		return nil, fmt.Errorf("secret is %d bytes, want %d", len(b), Size)
	}
	s := new(Secret)
	copy(s.b[:], b)
	return s, nil
}

// FromHex parses the in-container representation (64 lowercase hex
// characters).
func FromHex(h []byte) (*Secret, error) {
	if len(h) != HexSize {
		return nil, fmt.Errorf("secret text is %d bytes, want %d", len(h), HexSize)
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return nil, errors.New("secret text is not lowercase hex")
		}
	}
	s := new(Secret)
	if _, err := hex.Decode(s.b[:], h); err != nil {
		return nil, fmt.Errorf("decode secret text: %w", err)
	}
	return s, nil
}

// Bytes returns a copy of the raw secret; the caller owns (and should zero)
// the copy.
func (s *Secret) Bytes() []byte {
	out := make([]byte, Size)
	copy(out, s.b[:])
	return out
}

// AppendHex appends the 64-character lowercase hex form to dst.
func (s *Secret) AppendHex(dst []byte) []byte {
	return hex.AppendEncode(dst, s.b[:])
}

// Equal reports whether two secrets are the same, in constant time.
func (s *Secret) Equal(o *Secret) bool {
	var v byte
	for i := range s.b {
		v |= s.b[i] ^ o.b[i]
	}
	return v == 0
}

// Zero overwrites the secret in memory.
func (s *Secret) Zero() {
	if s == nil {
		return
	}
	clear(s.b[:])
}

// String implements fmt.Stringer without revealing the secret.
func (*Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the secret.
func (*Secret) GoString() string { return "secretfs.Secret{[redacted]}" }

// Format makes every fmt verb (%x and %v included) print "[redacted]".
func (*Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// MarshalJSON refuses to serialize the secret.
func (*Secret) MarshalJSON() ([]byte, error) { return nil, ErrNotSerializable }

// MarshalText refuses to serialize the secret.
func (*Secret) MarshalText() ([]byte, error) { return nil, ErrNotSerializable }

// MarshalBinary refuses to serialize the secret.
func (*Secret) MarshalBinary() ([]byte, error) { return nil, ErrNotSerializable }

// Zero overwrites b; use it on temporary copies of secret material.
func Zero(b []byte) { clear(b) }
