// SPDX-License-Identifier: Apache-2.0

// Package testtree builds hostile container images for tests from a tiny
// tree language, so attack cases read as one line each.
package testtree

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Build creates the tree under root. Each line is one of
//
//	dir PATH | file PATH | symlink PATH TARGET | proc PATH (bind of /proc)
//	bind PATH SOURCE (a bind mount, as of a host volume)
//	mount FSTYPE PATH (a new tmpfs, sysfs, devtmpfs, ... mounted there)
//	shared PATH (make the mount at PATH shared)
//
// with "$HOST" replaced by host, the host directory the image tries to
// reach. Mounts need root and a private mount namespace.
func Build(root, host string, lines []string) error {
	for _, l := range lines {
		f := strings.Fields(strings.ReplaceAll(l, "$HOST", host))
		if len(f) < 2 {
			return fmt.Errorf("bad line %q", l)
		}
		p := filepath.Join(root, f[1])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		var err error
		switch f[0] {
		case "dir":
			err = os.MkdirAll(p, 0o755)
		case "file":
			err = os.WriteFile(p, []byte("image file"), 0o644)
		case "symlink":
			err = os.Symlink(f[2], p)
		case "proc":
			if err = os.MkdirAll(p, 0o555); err == nil {
				err = unix.Mount("/proc", p, "", unix.MS_BIND|unix.MS_REC, "")
			}
		case "bind":
			if err = os.MkdirAll(p, 0o755); err == nil && len(f) > 2 {
				err = unix.Mount(f[2], p, "", unix.MS_BIND, "")
			}
		case "mount":
			if len(f) < 3 {
				return fmt.Errorf("bad line %q", l)
			}
			p = filepath.Join(root, f[2])
			if err = os.MkdirAll(p, 0o755); err == nil {
				err = unix.Mount(f[1], p, f[1], 0, "")
			}
		case "shared":
			err = unix.Mount("", p, "", unix.MS_SHARED, "")
		default:
			err = fmt.Errorf("unknown op %q", f[0])
		}
		if err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
	}
	return nil
}

// Snapshot lists every path, mode and size under dir, to prove a host
// directory was left untouched.
func Snapshot(dir string) string {
	var b strings.Builder
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %v %d\n", p, fi.Mode(), fi.Size())
		}
		return nil
	})
	return b.String()
}
