// Package secretfile reads the northstar lifecycle secret as a container sees
// it, /run/northstar/secret: exactly 64 lowercase hex characters, no newline.
// The MQTT broker and client of examples/mqtt both use the text as-is as the
// MQTT password.
//
// The Secret type will not print, log or marshal itself, so a secret that
// slips into a log line or an error shows up as "[redacted]".
package secretfile

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// DefaultPath is where northstar materializes the secret inside a container.
const DefaultPath = "/run/northstar/secret"

// Size is the length of the secret text: 32 bytes as lowercase hex.
const Size = 64

// ErrMalformed is returned (wrapped) when the file is not exactly Size
// lowercase hex characters. The error never quotes the file's content.
var ErrMalformed = errors.New("want exactly 64 lowercase hex characters, no newline")

// ErrNotSerializable is returned by every marshaler of Secret.
var ErrNotSerializable = errors.New("secretfile: the secret is never serialized")

// Secret is the secret text (the 64 hex characters, which are the MQTT
// password). The zero value is not a valid secret.
type Secret struct {
	b [Size]byte
}

// Read reads and validates the secret file at path. Its errors start with
// "read secret file" and name the path, never the content. The read is bounded, and
// only a regular file is accepted: a FIFO or a device put at that path makes
// Read fail instead of hanging or reading forever.
func Read(path string) (*Secret, error) {
	// O_NONBLOCK keeps open(2) of a FIFO from blocking until a writer shows
	// up; it changes nothing for the regular file we expect.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read secret file: %w", err) // *fs.PathError names the path
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read secret file %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	var buf [Size + 1]byte // one extra byte to notice a trailing newline or more
	defer clear(buf[:])
	n, err := io.ReadFull(f, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	s, err := Parse(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("read secret file %s: %w", path, err)
	}
	return s, nil
}

// Parse validates text as the secret and copies it. The error says what is
// wrong (length, alphabet) without quoting text.
func Parse(text []byte) (*Secret, error) {
	if len(text) > Size {
		return nil, fmt.Errorf("more than %d bytes: %w", Size, ErrMalformed)
	}
	if len(text) < Size {
		return nil, fmt.Errorf("%d bytes: %w", len(text), ErrMalformed)
	}
	for _, c := range text {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return nil, fmt.Errorf("not lowercase hex: %w", ErrMalformed)
		}
	}
	s := new(Secret)
	copy(s.b[:], text)
	return s, nil
}

// Matches reports whether password is the secret text, in time independent
// of the content (crypto/subtle.ConstantTimeCompare; a length mismatch returns
// early, but the length is public).
func (s *Secret) Matches(password []byte) bool {
	return subtle.ConstantTimeCompare(s.b[:], password) == 1
}

// Password returns a copy of the secret text to send as the MQTT password.
// The caller owns the copy and should clear it after use.
func (s *Secret) Password() []byte {
	out := make([]byte, Size)
	copy(out, s.b[:])
	return out
}

// Zero overwrites the secret in memory.
func (s *Secret) Zero() {
	if s != nil {
		clear(s.b[:])
	}
}

// String implements fmt.Stringer without revealing the secret.
func (*Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the secret.
func (*Secret) GoString() string { return "secretfile.Secret{[redacted]}" }

// Format makes every fmt verb (%s, %x, %v, %+v, %q ...) print "[redacted]".
func (*Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[redacted]") }

// MarshalJSON refuses to serialize the secret.
func (*Secret) MarshalJSON() ([]byte, error) { return nil, ErrNotSerializable }

// MarshalText refuses to serialize the secret.
func (*Secret) MarshalText() ([]byte, error) { return nil, ErrNotSerializable }

// MarshalBinary refuses to serialize the secret.
func (*Secret) MarshalBinary() ([]byte, error) { return nil, ErrNotSerializable }
