// Package testenv holds what unit tests share about their environment:
// prerequisites that fail the run in CI (CI=true) and skip elsewhere.
package testenv

import (
	"os"
	"testing"
)

// RequireRoot fails the test in CI and skips it elsewhere unless it runs as
// root; why says what needs root.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("this test needs root (%s); CI runs as root", why)
	}
	tb.Skipf("needs root (%s)", why)
}
