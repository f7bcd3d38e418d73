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
	// Larger than the first buffer, and at the bound exactly.
	big := strings.Repeat("0123456789", 1000)
	if err := os.WriteFile(p, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadFile(p, int64(len(big)), "f"); err != nil || string(got) != big {
		t.Errorf("ReadFile of %d bytes: %d bytes, %v", len(big), len(got), err)
	}
	if _, err := ReadFile(p, int64(len(big))-1, "f"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile of %d bytes, max one less: %v, want ErrTooLarge", len(big), err)
	}
	// A file whose size says 0 (procfs) is read to its end all the same.
	want, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile("/proc/self/status", 1<<20, "status")
	if err != nil || !strings.HasPrefix(string(got), "Name:") || len(got) < len(want)/2 {
		t.Errorf("ReadFile(/proc/self/status) = %d bytes, %v; want about %d", len(got), err, len(want))
	}
	// A directory fails on the read, naming the input.
	if _, err := ReadFile(t.TempDir(), 4, "dir"); err == nil || !strings.HasPrefix(err.Error(), "read dir: ") {
		t.Errorf("ReadFile of a directory: %v", err)
	}
}
