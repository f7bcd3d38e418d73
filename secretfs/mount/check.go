// SPDX-License-Identifier: Apache-2.0

package mount

import (
	"errors"
	"fmt"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// CheckMounted checks, in the calling thread's mount namespace (a
// container's, after the runtime made its mounts and before its process
// runs), that unsafeDir inside root is a mount of the directory want: the
// mount the runtime made of what the agent handed it (NRI, the shim),
// where the hook would have made its own. It must be reached from root
// without following any symlink (an image's symlink in /run sends the
// runtime's mount elsewhere: that is refused here, not followed), be
// read-only, nosuid, nodev and noexec, not be shared, and sit on the
// directory onto (nil: on the container's root filesystem or a tmpfs
// mounted exactly at /run, the rule of AttachInRoot). It returns the
// mount's unique id (0 before kernel 6.8), which a restarted agent
// checks before it takes the filesystem back.
func CheckMounted(root *os.File, unsafeDir string, want, onto *os.File) (uint64, error) {
	refused := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrTargetRefused}, args...)...)
	}
	openDir := func(p string) (*os.File, error) {
		fd, err := unix.Openat2(int(root.Fd()), p, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if errors.Is(err, unix.ELOOP) {
			return nil, refused("%s in the container is reached through a symlink, which the runtime followed; fix the image's symlinks", p)
		}
		if err != nil {
			return nil, refused("%s in the container: %v%s", p, err, resolveHint(err))
		}
		return os.NewFile(uintptr(fd), p), nil
	}
	dir, err := openDir(unsafeDir)
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	if !sameFile(dir, want) {
		return 0, refused("%s in the container is not the mount northstar handed the runtime (an image's symlink sent it elsewhere?)", unsafeDir)
	}
	t, err := newTargetCheck(root)
	if err != nil {
		return 0, err
	}
	id, err := t.ids.of(dir)
	if err != nil {
		return 0, err
	}
	info, err := t.ids.lookup(id)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", unsafeDir, err)
	}
	const need = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	if info.attr&need != need {
		return 0, refused("%s in the container is mounted without ro, nosuid, nodev, noexec", unsafeDir)
	}
	if info.shared {
		return 0, refused("%s in the container is a shared mount", unsafeDir)
	}
	parent, err := openDir(path.Dir(path.Clean("/" + unsafeDir)))
	if err != nil {
		return 0, err
	}
	defer parent.Close()
	if onto != nil {
		if !sameFile(parent, onto) {
			return 0, refused("%s in the container is not on northstar's own mount", unsafeDir)
		}
	} else if err := t.check(parent, path.Dir(unsafeDir)); err != nil {
		return 0, err
	}
	if !t.ids {
		return 0, nil
	}
	return id, nil
}

// sameFile reports whether a and b are the same directory (device and
// inode).
func sameFile(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
