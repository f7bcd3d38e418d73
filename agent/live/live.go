// SPDX-License-Identifier: Apache-2.0

// Package live keeps the containers' secret filesystems for the agent, so
// that a rotation reaches the containers that are already running
// (DESIGN.md §12).
//
// Containers outlive the runtime that started them, so a runtime restart
// (a rotation) split a host into containers holding the old secret and
// containers holding the new one; systemd's credentials had the same hole
// (systemd#21099). Here the agent builds each container's filesystem
// itself (Deliver): it keeps the writable mount and hands the hook a
// read-only view of the same filesystem, which the hook moves onto
// /run/northstar in the container. Through the writable mount the agent
// replaces the secret atomically at every rotation (a reader sees the old
// file or the new, never a mix), keeps the one before as secret.previous
// for the grace period, and removes both when the container is revoked.
// The container's view stays read-only: it can neither write nor create
// anything there.
//
// A restarted agent takes a container's filesystem back (Reacquire):
// joining the container's mount namespace through the pidfd of its init
// process, it opens /run/northstar and takes it only if it is the very
// mount the agent handed out (its unique mount id, which the kernel never
// reuses): a container that unmounted its view and mounted a filesystem of
// its own there, or stacked one on top, gets nothing written into it.
package live

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/nsenter"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
)

// FS is one container's secret filesystem, as the agent holds it: the
// writable mount of the filesystem whose read-only view the container has.
//
// Its methods may be called from several goroutines, Close included:
// each runs with the mount's fd held, and after Close they fail with
// ErrClosed instead of using an fd number the process may have reused.
type FS struct {
	owner   mount.Owner
	mountID uint64 // of the container's view

	mu     sync.Mutex // guards rw, closed; held for each method's system calls
	rw     *mount.Mount
	closed bool
}

// ErrClosed: the FS was closed (the container is gone, lost or revoked).
var ErrClosed = errors.New("the container's secret filesystem was let go")

// with runs f on the writable mount's directory fd, held.
func (fs *FS) with(f func(dir int) error) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return ErrClosed
	}
	return f(int(fs.rw.File().Fd()))
}

// Deliver builds a container's filesystem holding secret (its in-container
// form, 64 hex), owned as o says, with the API directory if withAPI. It
// returns what the agent keeps and the view to hand to the hook.
func Deliver(secret []byte, o mount.Owner, withAPI bool) (*FS, *mount.Mount, error) {
	rw, err := mount.NewWritable(secret, o, withAPI)
	if err != nil {
		return nil, nil, err
	}
	view, err := rw.View()
	if err != nil {
		rw.Close()
		return nil, nil, err
	}
	// Before kernel 6.8 there is no unique id: rotations still reach the
	// container while this agent runs (it holds rw), but after a restart
	// it cannot tell its mount from one the container put in its place,
	// so Reacquire refuses (mountID 0).
	id, err := view.UniqueID()
	if errors.Is(err, mount.ErrNoUniqueID) {
		id, err = 0, nil
	}
	if err != nil {
		view.Close()
		rw.Close()
		return nil, nil, err
	}
	return &FS{rw: rw, owner: o, mountID: id}, view, nil
}

// View is another read-only view of the filesystem (a hook that runs at
// two stages asks twice).
func (fs *FS) View() (*mount.Mount, error) {
	var view *mount.Mount
	err := fs.with(func(int) (err error) {
		view, err = fs.rw.View()
		return err
	})
	return view, err
}

// MountID is the unique id of the container's view.
func (fs *FS) MountID() uint64 { return fs.mountID }

// Owner is who owns the secret file, as delivered.
func (fs *FS) Owner() mount.Owner { return fs.owner }

// Rotate puts current in place of the secret, atomically, and with
// previous (not nil), the one before it as secretfs.PreviousFile; owner
// and mode as delivered.
func (fs *FS) Rotate(current, previous []byte) error {
	return fs.with(func(dir int) error {
		if previous != nil {
			if err := fs.put(dir, secretfs.PreviousFile, previous); err != nil {
				return err
			}
		}
		return fs.put(dir, secretfs.File, current)
	})
}

// DropPrevious removes secretfs.PreviousFile (the grace period is over).
func (fs *FS) DropPrevious() error {
	return fs.with(func(dir int) error { return remove(dir, secretfs.PreviousFile) })
}

// Revoke removes the secret and the one before it: the container is cut
// off (northstarctl rotate --revoke).
func (fs *FS) Revoke() error {
	return fs.with(func(dir int) error {
		return errors.Join(remove(dir, secretfs.File), remove(dir, secretfs.PreviousFile))
	})
}

// Current returns the secret the container reads now (nil: none): what a
// restarted agent keeps as the one before when it catches the container
// up. The caller zeroes it.
func (fs *FS) Current() (b []byte, err error) {
	err = fs.with(func(dir int) error {
		// Non-blocking and only a regular file: the agent made the file,
		// but should anything else be there (a FIFO), it must not hang
		// a rotation.
		fd, err := unix.Openat(dir, secretfs.File, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", secretfs.File, err)
		}
		f := os.NewFile(uintptr(fd), secretfs.File)
		defer f.Close()
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", secretfs.File)
		}
		b, err = io.ReadAll(io.LimitReader(f, secretfs.HexSize+1))
		if n := len(b); err != nil || n != secretfs.HexSize {
			secretfs.Zero(b)
			b = nil
			return fmt.Errorf("read %s: %d bytes, %v", secretfs.File, n, err)
		}
		return nil
	})
	return b, err
}

// Close lets the filesystem go (the container keeps its view while it
// runs). The methods called after it fail with ErrClosed.
func (fs *FS) Close() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return nil
	}
	fs.closed = true
	return fs.rw.Close()
}

// put writes content to name.new in dir and renames it over name: readers
// of name see the old file or the new one, never a part.
func (fs *FS) put(dir int, name string, content []byte) error {
	tmp := name + ".new"
	_ = unix.Unlinkat(dir, tmp, 0) // left by an agent killed mid-write
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o200)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	err = func() error {
		defer f.Close()
		if n, err := f.Write(content); err != nil || n != len(content) {
			return fmt.Errorf("write %s: %d of %d bytes: %v", tmp, n, len(content), err)
		}
		if err := unix.Fchown(fd, int(fs.owner.UID), int(fs.owner.GID)); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
		if err := unix.Fchmod(fd, uint32(fs.owner.Mode)); err != nil {
			return fmt.Errorf("chmod %s: %w", tmp, err)
		}
		return nil
	}()
	if err == nil {
		err = unix.Renameat(dir, tmp, dir, name)
	}
	if err != nil {
		_ = unix.Unlinkat(dir, tmp, 0)
		return err
	}
	return nil
}

func remove(dir int, name string) error {
	if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// ErrNotOurs: what the container has at /run/northstar is not the view the
// agent handed out.
var ErrNotOurs = errors.New("not northstar's mount")

// Reacquire takes back, after an agent restart, the filesystem of the
// container whose init process pidfd is, whose view had unique mount id
// mountID: inside the container's mount namespace it opens
// /run/northstar, checks that the mount there is that view, and clones it
// writable (mount_setattr clears the read-only flag on the clone only;
// the container's view stays read-only).
//
// Where /run/northstar resolves to does not matter (a container may have
// made /run a symlink since): only the mount it lands on, by its id. A
// container that unmounted its view (and perhaps mounted something of its
// own there) or stacked a mount on top of it gets ErrNotOurs, and nothing
// is written.
func Reacquire(pidfd int, mountID uint64, o mount.Owner) (*FS, error) {
	if mountID == 0 {
		return nil, errors.New("the kernel gives no unique mount ids (6.8+ needed), so the mount northstar gave cannot be told from one the container put there")
	}
	var rw *mount.Mount
	err := nsenter.InMountNamespaceOf(pidfd, func() error {
		dir, err := unix.Openat2(unix.AT_FDCWD, secretfs.Dir, &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			return fmt.Errorf("open %s in the container: %w", secretfs.Dir, err)
		}
		defer unix.Close(dir)
		id, err := mount.UniqueID(dir)
		if err != nil {
			return err
		}
		// The root of the mount, not a directory inside it: a container
		// that moved its view and pointed /run/northstar at view/api would
		// have the agent write there.
		var stx unix.Statx_t
		if err := unix.Statx(dir, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, 0, &stx); err != nil {
			return fmt.Errorf("statx %s: %w", secretfs.Dir, err)
		}
		if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 || stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
			return fmt.Errorf("%w: the container's %s is inside a mount, not the root of one", ErrNotOurs, secretfs.Dir)
		}
		if id != mountID {
			return fmt.Errorf("%w: the container's %s is mount %d, northstar's was %d (unmounted or covered)", ErrNotOurs, secretfs.Dir, id, mountID)
		}
		fd, err := unix.OpenTree(dir, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
		if err != nil {
			return fmt.Errorf("open_tree %s: %w", secretfs.Dir, err)
		}
		attr := unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("mount_setattr writable: %w", err)
		}
		rw = mount.FromFile(os.NewFile(uintptr(fd), "reacquired"))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &FS{rw: rw, owner: o, mountID: mountID}, nil
}
