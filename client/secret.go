// SPDX-License-Identifier: Apache-2.0

package client

// The lifecycle secret as a container sees it, /run/northstar/secret:
// exactly 64 lowercase hex characters, no newline, usable as-is as a
// password (the MQTT example's broker and client do). After a live
// rotation (DESIGN.md §12) the one before stays beside it as
// secret.previous for the grace period: ReadSecrets reads both, and
// WatchSecrets says when they change.
//
// The Secret type will not print, log or marshal itself, so a secret that
// slips into a log line or an error shows up as "[redacted]".

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/dirwatch"
)

// SecretDir is where northstar materializes the secret inside a container.
const SecretDir = "/run/northstar"

// DefaultSecretPath is the secret's file, and PreviousSecretPath the one
// before it after a live rotation.
const (
	DefaultSecretPath  = SecretDir + "/secret"
	PreviousSecretPath = SecretDir + "/secret.previous"
)

// SecretSize is the length of the secret text: 32 bytes as lowercase hex.
const SecretSize = 64

// ErrMalformed is returned (wrapped) when the file is not exactly Size
// lowercase hex characters. The error never quotes the file's content.
var ErrMalformed = errors.New("want exactly 64 lowercase hex characters, no newline")

// ErrNotSerializable is returned by every marshaler of Secret.
var ErrNotSerializable = errors.New("client: the secret is never serialized")

// Secret is the secret text (the 64 hex characters, which are the MQTT
// password). The zero value is not a valid secret.
type Secret struct {
	b [SecretSize]byte
}

// ReadSecret reads and validates the secret file at path. Its errors start with
// "read secret file" and name the path, never the content. The read is bounded, and
// only a regular file is accepted: a FIFO or a device put at that path makes
// Read fail instead of hanging or reading forever.
func ReadSecret(path string) (*Secret, error) {
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
	var buf [SecretSize + 1]byte // one extra byte to notice a trailing newline or more
	defer clear(buf[:])
	n, err := io.ReadFull(f, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	s, err := ParseSecret(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("read secret file %s: %w", path, err)
	}
	return s, nil
}

// ParseSecret validates text as the secret and copies it. The error says what is
// wrong (length, alphabet) without quoting text.
func ParseSecret(text []byte) (*Secret, error) {
	if len(text) > SecretSize {
		return nil, fmt.Errorf("more than %d bytes: %w", SecretSize, ErrMalformed)
	}
	if len(text) < SecretSize {
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
	out := make([]byte, SecretSize)
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
func (*Secret) GoString() string { return "client.Secret{[redacted]}" }

// Format makes every fmt verb (%s, %x, %v, %+v, %q ...) print "[redacted]".
func (*Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[redacted]") }

// MarshalJSON refuses to serialize the secret.
func (*Secret) MarshalJSON() ([]byte, error) { return nil, ErrNotSerializable }

// MarshalText refuses to serialize the secret.
func (*Secret) MarshalText() ([]byte, error) { return nil, ErrNotSerializable }

// MarshalBinary refuses to serialize the secret.
func (*Secret) MarshalBinary() ([]byte, error) { return nil, ErrNotSerializable }

// ReadSecrets reads the secret of the container (path, "" for
// DefaultSecretPath) and, during the grace period after a live rotation,
// the one before it, path+".previous" (nil otherwise). A server that
// checks passwords against the secret reads both at every login, so that
// a client started before the rotation keeps getting in until the grace
// period is over.
func ReadSecrets(path string) (current, previous *Secret, err error) {
	if path == "" {
		path = DefaultSecretPath
	}
	if current, err = ReadSecret(path); err != nil {
		return nil, nil, err
	}
	previous, err = ReadSecret(path + ".previous")
	if errors.Is(err, fs.ErrNotExist) {
		return current, nil, nil
	}
	if err != nil {
		current.Zero()
		return nil, nil, err
	}
	return current, previous, nil
}

// WatchSecrets returns a channel that receives (coalesced) after every
// change of the secret files in dir ("" for SecretDir): a rotation renames
// the new secret into place, and the grace period's end removes the one
// before. It is closed when ctx ends.
func WatchSecrets(ctx context.Context, dir string) (<-chan struct{}, error) {
	if dir == "" {
		dir = SecretDir
	}
	return dirwatch.Watch(ctx, dir, unix.IN_MOVED_TO|unix.IN_CREATE|unix.IN_DELETE|unix.IN_CLOSE_WRITE)
}
