// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestHostRoundTrip(t *testing.T) {
	ctx := context.Background()
	keyPath := filepath.Join(t.TempDir(), HostKeyFile)
	h := NewHost(keyPath)
	pt := bytes.Repeat([]byte{0x5a}, 32)
	blob, err := h.Seal(ctx, pt)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, pt[:8]) {
		t.Error("blob contains plaintext")
	}
	fi, err := os.Stat(keyPath)
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("key file: %v, mode %v; want 0400", err, fi.Mode())
	}
	got, err := h.Unseal(ctx, blob)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Unseal = %x, %v", got, err)
	}
}

func TestHostRefusesBadBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h := NewHost(filepath.Join(dir, HostKeyFile))
	blob, err := h.Seal(ctx, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(blob)
		b[i] ^= 1
		return b
	}
	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"garbage", []byte("hello world, this is not a blob at all"), ErrCorrupt},
		{"truncated", blob[:len(blob)-1], ErrCorrupt},
		{"header only", blob[:12], ErrCorrupt},
		{"future version", append([]byte{'N', 'S', 'H', 9}, blob[4:]...), ErrUnknownVersion},
		{"flipped ciphertext", flip(len(blob) - 20), ErrCorrupt},
		{"flipped tag", flip(len(blob) - 1), ErrCorrupt},
		{"flipped nonce", flip(14), ErrCorrupt},
		{"flipped key id", flip(5), ErrWrongKey},
	}
	for _, tt := range tests {
		if _, err := h.Unseal(ctx, tt.blob); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// Another key (a copy of the blob to another host) is named as such.
	other := NewHost(filepath.Join(t.TempDir(), HostKeyFile))
	if _, err := other.Seal(ctx, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Unseal(ctx, blob); !errors.Is(err, ErrWrongKey) {
		t.Errorf("other key: err = %v, want ErrWrongKey", err)
	}
	// A missing key file is named, and never silently recreated on unseal.
	if err := os.Remove(filepath.Join(dir, HostKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Unseal(ctx, blob); !errors.Is(err, ErrNoKey) {
		t.Errorf("missing key: err = %v, want ErrNoKey", err)
	}
	if _, err := os.Stat(filepath.Join(dir, HostKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("Unseal created a key file")
	}
}
