// SPDX-License-Identifier: Apache-2.0

package flock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLockExcludes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held = %v, want DeadlineExceeded", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := Lock(context.Background(), p)
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Lock returned (%v) while the lock was held", err)
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not granted the lock after unlock")
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v, %v; want 0600", fi.Mode(), err)
	}
}

// TestKilledHolderReleases: the kernel drops the lock of a process that
// dies, so a killed hook never wedges the others.
func TestKilledHolderReleases(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1)")
	}
	p := filepath.Join(t.TempDir(), "lock")
	holder := exec.Command("flock", "--exclusive", "--close", p, "sleep", "60") // --close: only flock(1) holds it
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	// Wait until the holder has it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err == nil {
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) did not take the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	unlock, err := Lock(ctx, p)
	if err != nil {
		t.Fatalf("lock of a killed holder not released: %v", err)
	}
	unlock()
}

func TestLockRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.Symlink(victim, filepath.Join(dir, "lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(context.Background(), filepath.Join(dir, "lock")); !errors.Is(err, unix.ELOOP) {
		t.Errorf("Lock through a symlink = %v, want ELOOP", err)
	}
	if _, err := os.Lstat(victim); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the symlink's target was created: %v", err)
	}
}

// TestTryLock: TryLock takes a free lock, and reports ErrHeld, without
// waiting, for one that is taken.
func TestTryLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrHeld) {
		t.Fatalf("TryLock of a held lock = %v, want ErrHeld", err)
	}
	unlock()
	again, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock after unlock: %v", err)
	}
	again()
}

// TestLockCancelledContext: a caller whose context has ended gets no lock,
// even a free one.
func TestLockCancelledContext(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if unlock, err := Lock(ctx, p); !errors.Is(err, context.Canceled) {
		if err == nil {
			unlock()
		}
		t.Fatalf("Lock with a cancelled context = %v, want context.Canceled", err)
	}
	unlock, err := TryLock(p)
	if err != nil {
		t.Fatalf("the lock is held after a refused Lock: %v", err)
	}
	unlock()
}
