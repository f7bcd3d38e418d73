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
	"os"
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

// ReadFile is ReadAll of the file at path. Open errors are returned as they
// are (an *fs.PathError), so callers can tell a missing file apart.
func ReadFile(path string, max int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, max, what)
}

// tooLarge says which input was too large, and is ErrTooLarge.
type tooLarge struct {
	what string
	max  int64
}

func (e *tooLarge) Error() string        { return fmt.Sprintf("%s is larger than %d bytes", e.what, e.max) }
func (e *tooLarge) Is(target error) bool { return target == ErrTooLarge }
