// SPDX-License-Identifier: Apache-2.0

// Package atomicfile replaces files so that a reader sees either the old or
// the new content, never a mix; Write also makes the result survive a crash.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// TempPrefix starts the names of temporary files; Write's callers may remove
// stale ones (left by a crash) while holding their own lock.
const TempPrefix = ".tmp-"

// Write replaces path with data durably: it writes a temporary file in the
// same directory, fsyncs it, renames it over path and fsyncs the directory,
// so a crash at any point leaves the old or the new content.
func Write(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, true)
}

// Replace is Write without the fsyncs: readers still see the old or the new
// content, but after a host crash the file may be either, or empty. For
// files that do not outlive a crash and whose loss fails closed.
func Replace(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, false)
}

func replace(path string, data []byte, perm os.FileMode, durable bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(dir, TempPrefix+base+"-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if durable {
		if err = f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
