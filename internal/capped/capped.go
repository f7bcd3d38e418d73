// SPDX-License-Identifier: Apache-2.0

// Package capped reads input whose size an outsider controls (OCI state,
// bundle config.json, the config file, the sealed record) with an upper
// bound, so that a huge or endless input fails with a clear error instead
// of exhausting memory.
package capped

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"golang.org/x/sys/unix"
)

// ErrTooLarge: the input holds more than the caller's bound.
var ErrTooLarge = errors.New("input too large")

// ReadAll reads r to the end and fails if it holds more than max bytes;
// what names the input in errors.
func ReadAll(r io.Reader, max int64, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(data)) > max {
		return nil, &tooLarge{what, max}
	}
	return data, nil
}

// ReadFile reads the file at path like ReadAll. It reads on a descriptor
// of its own (open(2), fstat(2) for the size, read(2)), not through an
// os.File: os.Open offers every file to the runtime's poller (an epoll_ctl
// that fails for a regular file, four fcntl), which a short-lived process
// such as the hook paid at each of its reads, and ReadAll grows its buffer
// from 512 bytes, a read(2) a step (DESIGN.md §19). Errors are those of
// os.ReadFile: an *fs.PathError for the open.
func ReadFile(path string, max int64, what string) ([]byte, error) {
	fd, err := ignoringEINTR(func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	// One read more than the size, to see the end; /proc files say 0.
	size := int64(512)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Size > 0 {
		size = min(st.Size, max) + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := ignoringEINTR(func() (int, error) { return unix.Read(fd, buf[len(buf):cap(buf)]) })
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, &fs.PathError{Op: "read", Path: path, Err: err})
		}
		if n == 0 {
			return buf, nil
		}
		if buf = buf[:len(buf)+n]; int64(len(buf)) > max {
			return nil, &tooLarge{what, max}
		}
	}
}

// ignoringEINTR retries fn while it is interrupted by a signal.
func ignoringEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// tooLarge says which input was too large, and is ErrTooLarge.
type tooLarge struct {
	what string
	max  int64
}

func (e *tooLarge) Error() string        { return fmt.Sprintf("%s is larger than %d bytes", e.what, e.max) }
func (e *tooLarge) Is(target error) bool { return target == ErrTooLarge }
