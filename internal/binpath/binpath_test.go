// SPDX-License-Identifier: Apache-2.0

package binpath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindNextToExecutable(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary itself is next to itself.
	got, err := Find(filepath.Base(exe))
	if err != nil || got != exe {
		t.Errorf("Find(own name) = %q, %v; want %q", got, err, exe)
	}
}

func TestFindOnPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "northstar-binpath-test")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Not executable: skipped on PATH too.
	if err := os.WriteFile(filepath.Join(dir, "northstar-binpath-noexec"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if got, err := Find("northstar-binpath-test"); err != nil || got != bin {
		t.Errorf("Find on PATH = %q, %v; want %q", got, err, bin)
	}
	_, err := Find("northstar-binpath-noexec")
	if err == nil || !strings.Contains(err.Error(), "neither next to") {
		t.Errorf("Find(non-executable) = %v, want a not-found error", err)
	}
}
