// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/northstar-oci/northstar/internal/atomicfile"
)

// Host seals with AES-256-GCM under a random 32-byte key kept in a 0400 file
// in the state directory. It protects the secret against a copy of the blob
// alone, not against a copy of the whole state directory: it is for hosts
// without a TPM, and `northstarctl status` says so.
//
// Blob format, version 1:
//
//	"NSH" 0x01 | key id (8) | nonce (12) | AES-256-GCM(ciphertext || tag)
//
// The 4-byte header and the key id are the GCM additional data, so a blob
// cannot be relabeled. The key id is a hash of the key, which lets Unseal say
// "another key" instead of "corrupt" when the key file was replaced.
type Host struct {
	keyPath string
}

var _ Sealer = (*Host)(nil)

const (
	hostKeySize   = 32
	hostKeyIDSize = 8
	hostNonceSize = 12
	hostTagSize   = 16
)

var hostMagic = []byte{'N', 'S', 'H', 1}

// HostKeyFile is the key file name inside the state directory.
const HostKeyFile = "host.key"

// NewHost returns a host-key sealer whose key lives at keyPath. The key is
// created by the first Seal (which the store runs under its lock).
func NewHost(keyPath string) *Host { return &Host{keyPath: keyPath} }

// Name implements Sealer.
func (*Host) Name() string { return KindHost }

// Seal implements Sealer.
func (h *Host) Seal(_ context.Context, plaintext []byte) ([]byte, error) {
	key, err := h.loadKey(true)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(hostMagic)+hostKeyIDSize+hostNonceSize+len(plaintext)+hostTagSize)
	out = append(out, hostMagic...)
	out = append(out, hostKeyID(key)...)
	nonce := make([]byte, hostNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("host seal: read random: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, out[:len(hostMagic)+hostKeyIDSize]), nil
}

// Unseal implements Sealer.
func (h *Host) Unseal(_ context.Context, blob []byte) ([]byte, error) {
	hdr := len(hostMagic) + hostKeyIDSize
	if err := checkHeader(blob, hostMagic, "host-key"); err != nil {
		return nil, fmt.Errorf("host unseal: %w", err)
	}
	if len(blob) < hdr+hostNonceSize+hostTagSize {
		return nil, fmt.Errorf("host unseal: %w (%d bytes)", ErrCorrupt, len(blob))
	}
	key, err := h.loadKey(false)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if !bytes.Equal(blob[len(hostMagic):hdr], hostKeyID(key)) {
		return nil, fmt.Errorf("host unseal: %w: %s is not the key it was sealed with", ErrWrongKey, h.keyPath)
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := blob[hdr : hdr+hostNonceSize]
	pt, err := aead.Open(nil, nonce, blob[hdr+hostNonceSize:], blob[:hdr])
	if err != nil {
		return nil, fmt.Errorf("host unseal: %w (authentication failed)", ErrCorrupt)
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	return cipher.NewGCM(block)
}

func hostKeyID(key []byte) []byte {
	h := sha256.New()
	h.Write([]byte("northstar host key id\x00"))
	h.Write(key)
	return h.Sum(nil)[:hostKeyIDSize]
}

// loadKey reads the key file, creating it first when create is set.
func (h *Host) loadKey(create bool) ([]byte, error) {
	f, err := os.Open(h.keyPath)
	if errors.Is(err, os.ErrNotExist) && create {
		if err := h.createKey(); err != nil {
			return nil, err
		}
		f, err = os.Open(h.keyPath)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("host key: %w: %s is missing", ErrNoKey, h.keyPath)
		}
		return nil, fmt.Errorf("host key: %w", err)
	}
	defer f.Close()
	key := make([]byte, hostKeySize+1)
	n, err := io.ReadFull(f, key)
	if err != io.ErrUnexpectedEOF || n != hostKeySize {
		clear(key)
		return nil, fmt.Errorf("host key: %w: %s is not a %d-byte key", ErrCorrupt, h.keyPath, hostKeySize)
	}
	return key[:hostKeySize], nil
}

func (h *Host) createKey() error {
	key := make([]byte, hostKeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("host key: read random: %w", err)
	}
	if err := atomicfile.Write(h.keyPath, key, 0o400); err != nil {
		return fmt.Errorf("host key: create %s: %w", filepath.Base(h.keyPath), err)
	}
	return nil
}
