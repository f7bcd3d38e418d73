// SPDX-License-Identifier: Apache-2.0

// Package binpath finds northstar's own binaries the way an install lays
// them out: side by side in one directory, else on PATH.
package binpath

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Find returns the absolute path of the executable name: next to the
// running executable (a normal install puts northstar's binaries in one
// directory), else on PATH. Runtimes exec hook paths as given, so the
// result is always absolute.
func Find(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, ok := Executable(p); ok {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is neither next to %s nor on PATH", name, filepath.Base(os.Args[0]))
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("find %s: %w", name, err)
	}
	return abs, nil
}

// Executable stats p (following symlinks, as exec does) and reports
// whether it is an executable regular file.
func Executable(p string) (os.FileInfo, bool) {
	fi, err := os.Stat(p)
	return fi, err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
