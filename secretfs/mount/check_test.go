// SPDX-License-Identifier: Apache-2.0

package mount

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestCheckMounted: what the agent accepts of a runtime's mount of the
// filesystem it built (NRI): that filesystem, at /run/northstar reached
// without a symlink, read-only, nosuid, nodev, noexec, on the rootfs; and
// what it refuses.
func TestCheckMounted(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces and real mounts")
	const ro = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	tests := []struct {
		name string
		// setup makes the rootfs and mounts src (the agent's directory)
		// as a runtime would; it returns the target of the mount.
		setup func(rootfs, src string) (string, uintptr, error)
		ok    bool
	}{
		{"a runtime's bind mount at /run/northstar", func(rootfs, src string) (string, uintptr, error) {
			return filepath.Join(rootfs, "run/northstar"), ro, os.MkdirAll(filepath.Join(rootfs, "run/northstar"), 0o755)
		}, true},
		{"read-write", func(rootfs, src string) (string, uintptr, error) {
			return filepath.Join(rootfs, "run/northstar"), unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, os.MkdirAll(filepath.Join(rootfs, "run/northstar"), 0o755)
		}, false},
		{"/run a symlink the runtime followed", func(rootfs, src string) (string, uintptr, error) {
			if err := os.MkdirAll(filepath.Join(rootfs, "elsewhere/northstar"), 0o755); err != nil {
				return "", 0, err
			}
			return filepath.Join(rootfs, "elsewhere/northstar"), ro, os.Symlink("elsewhere", filepath.Join(rootfs, "run"))
		}, false},
		{"something else at /run/northstar", func(rootfs, src string) (string, uintptr, error) {
			return "", 0, os.MkdirAll(filepath.Join(rootfs, "run/northstar"), 0o755)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			rootfs, src := filepath.Join(dir, "rootfs"), filepath.Join(dir, "agent")
			if err := os.MkdirAll(src, 0o755); err != nil {
				t.Fatal(err)
			}
			err := inPrivateMountNS(func() error {
				if err := unix.Mount("tmpfs", src, "tmpfs", 0, ""); err != nil {
					return err
				}
				if err := os.Mkdir(rootfs, 0o755); err != nil {
					return err
				}
				// The container's root: a mount of its own, as the
				// runtime's rootfs is.
				if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND, ""); err != nil {
					return err
				}
				target, flags, err := tt.setup(rootfs, src)
				if err != nil {
					return err
				}
				if target != "" {
					if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
						return err
					}
					if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
						return err
					}
				}
				root, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY, 0)
				if err != nil {
					return err
				}
				defer root.Close()
				want, err := os.OpenFile(src, unix.O_PATH|unix.O_DIRECTORY, 0)
				if err != nil {
					return err
				}
				defer want.Close()
				id, err := CheckMounted(root, "/run/northstar", want, nil)
				switch {
				case tt.ok && err != nil:
					t.Errorf("refused: %v", err)
				case tt.ok && id == 0 && bool(statmountIDs()):
					t.Error("no unique mount id")
				case !tt.ok && !errors.Is(err, ErrTargetRefused):
					t.Errorf("got %v, want ErrTargetRefused", err)
				case !tt.ok:
					t.Logf("refused: %v", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
