// SPDX-License-Identifier: Apache-2.0

// Package ctltest makes a test binary northstarctl, for the tests of what
// runs northstarctl as a child: the shim and the runtime wrapper rotate
// the lifecycle secret in one (package lifecycle/rotate). The child runs
// the real northstarctl code; only its binary is the test's.
package ctltest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/northstar-oci/northstar/ctl"
)

// runEnv set makes the test binary northstarctl when run by that name.
const runEnv = "NORTHSTAR_TEST_NORTHSTARCTL"

// Main runs northstarctl, as cmd/northstarctl does, instead of the tests
// when this test binary runs as the northstarctl Install put on PATH. Call
// it first in TestMain.
func Main() {
	if os.Getenv(runEnv) != "1" || filepath.Base(os.Args[0]) != "northstarctl" {
		return
	}
	err := ctl.Run(context.Background(), &ctl.Env{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "northstarctl: %v\n", err)
	if errors.Is(err, ctl.ErrUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}

// Install puts northstarctl (this test binary, run as Main) in a new
// directory first on PATH for the rest of t, and returns the directory
// (for the tests that give their child a PATH of its own).
func Install(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "northstarctl")
	if err := os.Symlink(exe, p); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	t.Setenv(runEnv, "1")
	return dir
}
