// SPDX-License-Identifier: Apache-2.0

// Package configtest writes the configs the unit tests of the runtime
// wrappers and the hook's packages run with: a file of their own in a
// temporary directory, loaded as northstar loads it.
package configtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/northstar-oci/northstar/config"
)

// Host is a config on the host sealer, its state in a new temporary
// directory, with extra (TOML) appended; cfg.Path names its file.
func Host(tb testing.TB, extra string) *config.Config {
	tb.Helper()
	dir := tb.TempDir()
	p := filepath.Join(dir, "config.toml")
	toml := fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n%s", filepath.Join(dir, "state"), extra)
	if err := os.WriteFile(p, []byte(toml), 0o644); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}
