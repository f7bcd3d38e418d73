// SPDX-License-Identifier: Apache-2.0

// Package flock takes the exclusive file locks that serialize northstar's
// processes: store writers, and conversations with a socket TPM.
package flock

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Lock takes an exclusive flock on path (created 0600 if missing, never
// through a symlink) and returns the function that releases it. The kernel
// releases the lock when the process dies, so a killed holder never wedges
// the others. If ctx ends first, Lock gives up and the lock, should it still
// be granted, is released at once.
func Lock(ctx context.Context, path string) (unlock func(), err error) {
	// A caller that has given up gets no lock, held or free.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wait for lock %s: %w", path, err)
	}
	// Uncontended, the usual case, the lock is taken here; only a wait
	// needs the goroutine below (flock(2) cannot be interrupted by ctx).
	if unlock, err := TryLock(path); !errors.Is(err, ErrHeld) {
		return unlock, err
	}
	fd, err := openLock(path)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		done <- flockRetry(fd, unix.LOCK_EX)
	}()
	select {
	case err := <-done:
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() { unix.Close(fd) }, nil // closing the only descriptor drops the lock
	case <-ctx.Done():
		go func() { <-done; unix.Close(fd) }()
		return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
	}
}

// ErrHeld: TryLock found the lock taken.
var ErrHeld = errors.New("held by another process")

// TryLock is Lock without waiting: ErrHeld when another open file
// description holds the lock.
func TryLock(path string) (unlock func(), err error) {
	fd, err := openLock(path)
	if err != nil {
		return nil, err
	}
	if err := flockRetry(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("lock %s: %w", path, ErrHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { unix.Close(fd) }, nil
}

// openLock opens the lock file at path, created 0600 if missing, never
// through a symlink.
func openLock(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return -1, fmt.Errorf("open lock %s: %w", path, err)
	}
	return fd, nil
}

// flockRetry is flock(2), called again when a signal interrupts it.
func flockRetry(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); err != unix.EINTR {
			return err
		}
	}
}
