// SPDX-License-Identifier: Apache-2.0

// Package testenv holds what unit tests share about their environment:
// prerequisites that fail the run in CI (CI=true) and skip elsewhere, and
// a log buffer safe for concurrent use.
package testenv

import (
	"bytes"
	"os"
	"os/signal"
	"sync"
	"syscall"
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

// WithFileSizeLimit runs fn with RLIMIT_FSIZE at limit bytes: a write
// that would take a file past it writes up to the limit and fails with
// EFBIG, as a write to a full disk stops short. SIGXFSZ, which the kernel
// sends with it, is ignored meanwhile. The limit is the whole process's:
// fn must be the only writer while it runs.
func WithFileSizeLimit(tb testing.TB, limit int64, fn func()) {
	tb.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		tb.Fatal(err)
	}
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: uint64(limit), Max: old.Max}); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			tb.Fatal(err)
		}
	}()
	fn()
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
