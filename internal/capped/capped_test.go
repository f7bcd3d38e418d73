// SPDX-License-Identifier: Apache-2.0

package capped

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadAll(t *testing.T) {
	for _, tt := range []struct {
		in      string
		max     int64
		wantErr string
	}{
		{"", 4, ""},
		{"abcd", 4, ""},
		{"abcde", 4, "thing is larger than 4 bytes"},
		{strings.Repeat("x", 1<<20), 4, "thing is larger than 4 bytes"},
	} {
		got, err := ReadAll(strings.NewReader(tt.in), tt.max, "thing")
		if tt.wantErr == "" {
			if err != nil || string(got) != tt.in {
				t.Errorf("ReadAll(%d bytes, max %d) = %q, %v", len(tt.in), tt.max, got, err)
			}
			continue
		}
		if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrTooLarge) {
			t.Errorf("ReadAll(%d bytes, max %d) error = %v, want %q", len(tt.in), tt.max, err, tt.wantErr)
		}
	}
	boom := errors.New("boom")
	if _, err := ReadAll(iotest.ErrReader(boom), 4, "thing"); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "read thing: ") {
		t.Errorf("reader error = %v, want it wrapped and named", err)
	}
}

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if _, err := ReadFile(p, 4, "f"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(p, 4, "f"); err == nil {
		t.Error("oversized file accepted")
	}
	if got, err := ReadFile(p, 5, "f"); err != nil || string(got) != "12345" {
		t.Errorf("ReadFile = %q, %v", got, err)
	}
}
