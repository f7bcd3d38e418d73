package mount

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// targetCheck knows the two mounts the secret may land on: the container's
// root filesystem and a tmpfs mounted exactly at its /run.
type targetCheck struct {
	rootMnt uint64
	runMnt  uint64 // 0: no tmpfs at /run
}

func newTargetCheck(root *os.File) (*targetCheck, error) {
	t := &targetCheck{}
	var err error
	if t.rootMnt, err = mountID(root); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	// /run itself, no symlink followed: a mount exactly there covers
	// whatever the image has at that path, so this reaches the mount's
	// root; with no mount there it stays on the root filesystem.
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(root.Fd()), "run", &how)
	if err != nil {
		return t, nil // no /run directory: only the root filesystem counts
	}
	run := os.NewFile(uintptr(fd), "run")
	defer run.Close()
	id, err := mountID(run)
	if err != nil || id == t.rootMnt {
		return t, nil
	}
	if info, err := lookupMount(id); err == nil && info.fstype == "tmpfs" {
		t.runMnt = id
	}
	return t, nil
}

// check refuses dir (shown as name) unless it is on an allowed mount.
func (t *targetCheck) check(dir *os.File, name string) error {
	id, err := mountID(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	info, err := lookupMount(id)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if id != t.rootMnt && (t.runMnt == 0 || id != t.runMnt) {
		return fmt.Errorf("%w: %s resolves into a %s mount at %s, not the container's root filesystem or a tmpfs at /run; fix the image's symlinks",
			ErrTargetRefused, name, info.fstype, info.mountPoint)
	}
	if info.shared {
		return fmt.Errorf("%w: %s is on a shared mount (%s at %s): a mount there would propagate to its peers; use private or slave propagation for the container's root",
			ErrTargetRefused, name, info.fstype, info.mountPoint)
	}
	return nil
}

// deepestExisting opens the deepest existing directory on the way to
// unsafePath inside root, and names it.
func deepestExisting(root *os.File, unsafePath string) (*os.File, string, error) {
	for p := path.Clean("/" + unsafePath); ; p = path.Dir(p) {
		if p == "/" {
			fd, err := unix.Dup(int(root.Fd()))
			if err != nil {
				return nil, "", err
			}
			return os.NewFile(uintptr(fd), "/"), "/", nil
		}
		f, err := pathrs.OpenatInRoot(root, p)
		if err == nil {
			return f, p, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return nil, "", err
		}
	}
}

// mkdirAllAs is pathrs.MkdirAllHandle with the filesystem credentials of
// creator (per thread: the goroutine is locked to its thread meanwhile).
func mkdirAllAs(root *os.File, unsafePath string, creator *IDs) (*os.File, error) {
	if creator == nil || (creator.UID == 0 && creator.GID == 0) {
		return pathrs.MkdirAllHandle(root, unsafePath, 0o755)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	oldGID, _ := unix.SetfsgidRetGid(-1)
	oldUID, _ := unix.SetfsuidRetUid(-1)
	unix.Setfsgid(int(creator.GID))
	unix.Setfsuid(int(creator.UID))
	defer func() {
		unix.Setfsuid(oldUID)
		unix.Setfsgid(oldGID)
	}()
	return pathrs.MkdirAllHandle(root, unsafePath, 0o755)
}

func mountID(f *os.File) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, fmt.Errorf("statx: %w", err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("statx: the kernel reports no mount id (5.8+ needed)")
	}
	return stx.Mnt_id, nil
}

// mountInfo is the part of a /proc/thread-self/mountinfo line we use.
type mountInfo struct {
	mountPoint, fstype string
	shared             bool
}

// lookupMount finds mount id in this thread's mount namespace.
func lookupMount(id uint64) (*mountInfo, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := fmt.Sprint(id)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		l := sc.Text()
		f := strings.Fields(l)
		if len(f) < 7 || f[0] != want {
			continue
		}
		info := &mountInfo{mountPoint: f[4]}
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				if i+1 < len(f) {
					info.fstype = f[i+1]
				}
				break
			}
			if strings.HasPrefix(f[i], "shared:") {
				info.shared = true
			}
		}
		return info, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("mount %d is not in this mount namespace", id)
}
