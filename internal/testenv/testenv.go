// Package testenv holds what unit tests share about their environment:
// prerequisites that fail the run in CI (CI=true) and skip elsewhere, and
// a log buffer safe for concurrent use.
package testenv

import (
	"bytes"
	"os"
	"sync"
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

// SyncBuffer is a bytes.Buffer that a goroutine under test may write
// while the test reads it (a log).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
