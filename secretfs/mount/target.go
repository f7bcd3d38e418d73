// SPDX-License-Identifier: Apache-2.0

package mount

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// targetCheck knows the two mounts the secret may land on: the container's
// root filesystem and a tmpfs mounted exactly at its /run.
type targetCheck struct {
	ids     mountIDs
	rootMnt uint64
	runMnt  uint64 // 0: no tmpfs at /run
}

func newTargetCheck(root *os.File) (*targetCheck, error) {
	t := &targetCheck{ids: statmountIDs()}
	var err error
	if t.rootMnt, err = t.ids.of(root); err != nil {
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
	id, err := t.ids.of(run)
	if err != nil || id == t.rootMnt {
		return t, nil
	}
	if info, err := t.ids.lookup(id); err == nil && info.fstype == "tmpfs" {
		t.runMnt = id
	}
	return t, nil
}

// check refuses dir (shown as name) unless it is on an allowed mount.
func (t *targetCheck) check(dir *os.File, name string) error {
	id, err := t.ids.of(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	info, err := t.ids.lookup(id)
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

// inRoot resolves unsafePath inside root with openat2(RESOLVE_IN_ROOT):
// the kernel keeps every symlink, absolute or relative, and every ".."
// inside root, and refuses /proc magic links. Nothing races the
// resolution (see AttachInRoot), so this is all pathrs-lite's OpenatInRoot
// would do on this kernel, without the private procfs it opens to check
// its result (about 40 system calls per start, DESIGN.md §19).
func inRoot(root *os.File, unsafePath string, flags uint64) (*os.File, error) {
	fd, err := unix.Openat2(int(root.Fd()), unsafePath, &unix.OpenHow{
		Flags:   flags | unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), unsafePath), nil
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
		f, err := inRoot(root, p, 0)
		if err == nil {
			return f, p, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return nil, "", err
		}
	}
}

// mkdirAllAs creates what is missing of unsafePath below existing (the
// deepest existing part of it, named existingPath, from deepestExisting),
// one component at a time, each with mkdirat in the directory opened
// before and opened without following anything, with the filesystem
// credentials of creator (per thread: the goroutine is locked to its
// thread meanwhile); then it opens unsafePath inside root.
func mkdirAllAs(root, existing *os.File, existingPath, unsafePath string, creator *IDs) (*os.File, error) {
	rest := strings.TrimPrefix(path.Clean("/"+unsafePath), existingPath)
	if names := strings.FieldsFunc(rest, func(r rune) bool { return r == '/' }); len(names) > 0 {
		if err := mkdirChain(existing, names, creator); err != nil {
			return nil, err
		}
	}
	return inRoot(root, unsafePath, unix.O_DIRECTORY)
}

func mkdirChain(parent *os.File, names []string, creator *IDs) error {
	if creator != nil && (creator.UID != 0 || creator.GID != 0) {
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
	}
	dirfd := int(parent.Fd())
	for _, name := range names {
		if err := unix.Mkdirat(dirfd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir %s: %w", name, err)
		}
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		})
		if dirfd != int(parent.Fd()) {
			unix.Close(dirfd)
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		dirfd = fd
	}
	if dirfd != int(parent.Fd()) {
		unix.Close(dirfd)
	}
	return nil
}

// mountInfo is what the check needs to know of a mount.
type mountInfo struct {
	mountPoint, fstype string
	shared             bool
	// attr holds the mount's MOUNT_ATTR_RDONLY, _NOSUID, _NODEV and
	// _NOEXEC (no other bits).
	attr uint64
}

// attrBits are the mount attributes mountInfo.attr reports.
const attrBits = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC

// mountIDs is how a mount is named and looked up: by its unique id with
// statmount(2) (kernel 6.8+: one system call), else by its reusable id in
// /proc/thread-self/mountinfo (a read of every mount of the namespace).
// Both look in the calling thread's mount namespace.
type mountIDs bool

// statmountIDs reports whether statmount(2) can be used here: the
// kernel has it and no seccomp filter refuses it.
func statmountIDs() mountIDs {
	_, err := statmount(0)
	return mountIDs(!errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM))
}

func (unique mountIDs) of(f *os.File) (uint64, error) {
	mask := uint32(unix.STATX_MNT_ID)
	if unique {
		mask = unix.STATX_MNT_ID_UNIQUE
	}
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, int(mask), &stx); err != nil {
		return 0, fmt.Errorf("statx: %w", err)
	}
	if stx.Mask&mask == 0 {
		return 0, errors.New("statx: the kernel reports no mount id (5.8+ needed)")
	}
	return stx.Mnt_id, nil
}

func (unique mountIDs) lookup(id uint64) (*mountInfo, error) {
	if unique {
		return statmount(id)
	}
	return lookupMountinfo(id)
}

// statmount(2)'s request and answer (linux/mount.h), the fields used.
type mntIDReq struct {
	size  uint32
	spare uint32
	id    uint64
	param uint64
}

const (
	statmountSBBasic  = 0x1
	statmountMntBasic = 0x2
	statmountMntPoint = 0x10
	statmountFSType   = 0x20
)

// statmountHeader is struct statmount up to mnt_point; strings follow at
// offset 512 (the struct is padded to that size).
type statmountHeader struct {
	size           uint32
	mntOpts        uint32
	mask           uint64
	sbDevMajor     uint32
	sbDevMinor     uint32
	sbMagic        uint64
	sbFlags        uint32
	fsType         uint32
	mntID          uint64
	mntParentID    uint64
	mntIDOld       uint32
	mntParentIDOld uint32
	mntAttr        uint64
	mntPropagation uint64
	mntPeerGroup   uint64
	mntMaster      uint64
	propagateFrom  uint64
	mntRoot        uint32
	mntPoint       uint32
}

const statmountStrings = 512

// statmount looks up the mount of unique id id; id 0 only probes for the
// system call (ENOSYS when the kernel has none).
func statmount(id uint64) (*mountInfo, error) {
	const want = statmountSBBasic | statmountMntBasic | statmountMntPoint | statmountFSType
	req := mntIDReq{size: 24, id: id, param: want}
	buf := make([]byte, 4096)
	for {
		_, _, errno := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
		runtime.KeepAlive(&req)
		if errno == unix.EOVERFLOW && len(buf) < 1<<20 {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if errno != 0 {
			if errno == unix.ENOENT {
				return nil, fmt.Errorf("mount %d is not in this mount namespace", id)
			}
			return nil, fmt.Errorf("statmount: %w", errno)
		}
		break
	}
	h := (*statmountHeader)(unsafe.Pointer(&buf[0]))
	if h.mask&want != want {
		return nil, fmt.Errorf("statmount: mount %d: the kernel left out fields (mask %#x)", id, h.mask)
	}
	str := func(off uint32) string {
		s := buf[statmountStrings+int(off):]
		if i := strings.IndexByte(string(s), 0); i >= 0 {
			s = s[:i]
		}
		return string(s)
	}
	return &mountInfo{mountPoint: str(h.mntPoint), fstype: str(h.fsType), shared: h.mntPropagation&unix.MS_SHARED != 0, attr: h.mntAttr & attrBits}, nil
}

// lookupMountinfo finds mount id in this thread's mount namespace.
func lookupMountinfo(id uint64) (*mountInfo, error) {
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
		for _, o := range strings.Split(f[5], ",") {
			info.attr |= map[string]uint64{"ro": unix.MOUNT_ATTR_RDONLY, "nosuid": unix.MOUNT_ATTR_NOSUID, "nodev": unix.MOUNT_ATTR_NODEV, "noexec": unix.MOUNT_ATTR_NOEXEC}[o]
		}
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
