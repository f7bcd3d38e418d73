// SPDX-License-Identifier: Apache-2.0

// Package dirwatch tells a goroutine that something changed in a
// directory, through inotify: the agent watches its state directory for a
// new sealed record, and applications watch /run/northstar for a rotated
// secret. It says only that something changed, coalesced, never what: the
// reader looks again, so a missed or merged event cannot mislead it.
package dirwatch

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Watch returns a channel that receives (coalesced) after every event of
// mask (unix.IN_*) in dir; it is closed when ctx ends.
func Watch(ctx context.Context, dir string, mask uint32) (<-chan struct{}, error) {
	// Non-blocking, through Go's poller: closing the file ends a Read
	// that waits.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	ch := make(chan struct{}, 1)
	stop := context.AfterFunc(ctx, func() { f.Close() })
	go func() {
		defer close(ch)
		defer stop()
		defer f.Close() // a Read that failed otherwise than by the close
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, nil
}
