// SPDX-License-Identifier: Apache-2.0

// Package mount puts the secret inside a container: a small detached
// filesystem (never swapped) holding one read-only file, built in the
// runtime's namespaces and then moved onto /run/northstar inside the
// container's mount namespace, resolved inside its rootfs.
package mount

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/secretfs"
)

// mountAttrs are the attributes of the mount the container sees.
const mountAttrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV |
	unix.MOUNT_ATTR_NOEXEC | unix.MOUNT_ATTR_NOSYMFOLLOW

// Owner is who owns the secret file inside the container and its mode.
// UID and GID are in the user namespace of the process building the mount.
type Owner struct {
	UID, GID uint32
	Mode     os.FileMode
}

// Mount is a detached filesystem holding the secret file: built in the
// runtime's namespaces, not yet visible anywhere, then moved onto the target
// directory inside the container's mount namespace by AttachInRoot.
type Mount struct {
	fd *os.File
	// FSType is the filesystem used: "tmpfs" with noswap, "ramfs" (never
	// swapped either), or "tmpfs-swappable" as the last resort.
	FSType string
}

// New builds the detached filesystem with one file, secretfs.File, holding
// the content of the sealed memfd src, owned and permissioned as o says, and
// makes the mount read-only, nosuid, nodev, noexec and nosymfollow.
func New(src *os.File, o Owner) (*Mount, error) { return newMount(src, o, false) }

// NewWithAPI is New with an empty directory APIDir beside the secret, on
// which AttachAPI mounts the container's API socket directory.
func NewWithAPI(src *os.File, o Owner) (*Mount, error) { return newMount(src, o, true) }

// APIDir is the name of the API directory inside the secret's directory.
const APIDir = "api"

// NewAPIOnly is NewWithAPI without the secret: for a container that opted
// out of the shared secret (io.northstar.secret.disable) but keeps its own
// identity. Nothing is unsealed for it.
func NewAPIOnly() (*Mount, error) {
	m, err := newDetachedFS()
	if err != nil {
		return nil, err
	}
	if err := unix.Mkdirat(int(m.fd.Fd()), APIDir, 0o755); err != nil {
		m.Close()
		return nil, fmt.Errorf("create %s directory: %w", APIDir, err)
	}
	if err := m.readOnly(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func newMount(src *os.File, o Owner, withAPI bool) (*Mount, error) {
	content, err := secretfs.ReadMemfd(src) // checks the seals
	if err != nil {
		return nil, err
	}
	defer secretfs.Zero(content)
	m, err := NewWritable(content, o, withAPI)
	if err != nil {
		return nil, err
	}
	if err := m.readOnly(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// NewWritable builds the detached filesystem with secretfs.File holding
// content (the secret in its in-container form), owned and permissioned
// as o says, and the API directory if asked, and leaves the mount
// writable: the agent keeps it to rewrite the secret at every rotation,
// and hands the container a read-only view of it (View). Mounts share
// their filesystem: what is written through this one is what the view
// shows.
func NewWritable(content []byte, o Owner, withAPI bool) (*Mount, error) {
	if err := secretfs.CheckMode(o.Mode); err != nil {
		return nil, fmt.Errorf("secret mode: %w", err)
	}
	m, err := newDetachedFS()
	if err != nil {
		return nil, err
	}
	if err := m.populate(content, o); err != nil {
		m.Close()
		return nil, err
	}
	if withAPI {
		if err := unix.Mkdirat(int(m.fd.Fd()), APIDir, 0o755); err != nil {
			m.Close()
			return nil, fmt.Errorf("create %s directory: %w", APIDir, err)
		}
	}
	return m, nil
}

// View returns a new detached mount of m's filesystem, read-only, nosuid,
// nodev, noexec, nosymfollow: what the container gets. m stays as it is.
func (m *Mount) View() (*Mount, error) {
	fd, err := unix.OpenTree(int(m.fd.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, fmt.Errorf("open_tree: %w", err)
	}
	v := &Mount{fd: os.NewFile(uintptr(fd), "view"), FSType: m.FSType}
	if err := v.readOnly(); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// FromFile is the mount whose detached mount fd f is (a View received
// over the agent's socket). It takes f.
func FromFile(f *os.File) *Mount { return &Mount{fd: f, FSType: "received"} }

// File is the mount's file descriptor: the root of its filesystem.
func (m *Mount) File() *os.File { return m.fd }

// UniqueID returns the mount's unique id (statx STATX_MNT_ID_UNIQUE,
// kernel 6.8+): never reused while the system runs, and kept when the
// mount is moved into a container. The agent records a view's, so that
// after a restart it takes back only the mount it handed out, not one a
// container put in its place.
func (m *Mount) UniqueID() (uint64, error) { return UniqueID(int(m.fd.Fd())) }

// ErrNoUniqueID: the kernel (before 6.8) gives mounts no unique id.
var ErrNoUniqueID = errors.New("statx gives no unique mount id (kernel 6.8+ needed)")

// UniqueID is the unique id of the mount fd is on.
func UniqueID(fd int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return 0, fmt.Errorf("statx: %w", err)
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return 0, ErrNoUniqueID
	}
	return stx.Mnt_id, nil
}

// readOnly makes the mount read-only, nosuid, nodev, noexec, nosymfollow:
// after this nothing in it changes through it.
func (m *Mount) readOnly() error {
	attr := unix.MountAttr{Attr_set: mountAttrs}
	if err := unix.MountSetattr(int(m.fd.Fd()), "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("mount_setattr read-only: %w", err)
	}
	return nil
}

// The filesystem's bounds: room for the secret, the one before it (live
// rotation), each while its replacement is written beside it, and the API
// directory; a page each.
const (
	fsSize   = "32k"
	fsInodes = "16"
)

// newDetachedFS makes a small filesystem that is never swapped: tmpfs with
// noswap (6.4+, refused inside a user namespace), else ramfs, else a
// size-capped tmpfs whose pages could reach swap.
func newDetachedFS() (*Mount, error) {
	type attempt struct {
		fs, kind string
		opts     [][2]string
	}
	attempts := []attempt{
		{"tmpfs", "tmpfs", [][2]string{{"noswap", ""}, {"size", fsSize}, {"nr_inodes", fsInodes}, {"mode", "0755"}}},
		{"ramfs", "ramfs", [][2]string{{"mode", "0755"}}},
		{"tmpfs", "tmpfs-swappable", [][2]string{{"size", fsSize}, {"nr_inodes", fsInodes}, {"mode", "0755"}}},
	}
	var msgs []string
	var last error
	for _, a := range attempts {
		fd, err := fsmount(a.fs, a.opts)
		if err == nil {
			return &Mount{fd: os.NewFile(uintptr(fd), a.kind), FSType: a.kind}, nil
		}
		msgs = append(msgs, fmt.Sprintf("%s: %v", a.kind, err))
		last = err
	}
	hint := ""
	if errors.Is(last, unix.EPERM) {
		hint = " (no CAP_SYS_ADMIN over this mount namespace: with plain rootless runc, configure the hook at createContainer)"
	}
	// One line: errors.Join would print one error per line.
	return nil, fmt.Errorf("create secret filesystem: %s%s: %w", strings.Join(msgs, "; "), hint, last)
}

// fsmount creates a filesystem with the new mount API and returns the fd of
// its detached mount.
func fsmount(fstype string, opts [][2]string) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	for _, kv := range opts {
		if kv[1] == "" {
			err = unix.FsconfigSetFlag(fsfd, kv[0])
		} else {
			err = unix.FsconfigSetString(fsfd, kv[0], kv[1])
		}
		if err != nil {
			return -1, fmt.Errorf("fsconfig %s: %w", kv[0], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w", err)
	}
	return mfd, nil
}

func (m *Mount) populate(content []byte, o Owner) error {
	fd, err := unix.Openat(int(m.fd.Fd()), secretfs.File,
		unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o200)
	if err != nil {
		return fmt.Errorf("create secret file: %w", err)
	}
	f := os.NewFile(uintptr(fd), secretfs.File)
	defer f.Close()
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("write secret file: %w", err)
	}
	if err := unix.Fchown(fd, int(o.UID), int(o.GID)); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("chown secret file to %d:%d: the id is not mapped in the runtime's user namespace", o.UID, o.GID)
		}
		return fmt.Errorf("chown secret file to %d:%d: %w", o.UID, o.GID, err)
	}
	if err := unix.Fchmod(fd, uint32(o.Mode)); err != nil {
		return fmt.Errorf("chmod secret file: %w", err)
	}
	return nil
}

// resolveHint explains the errors an image's symlinks cause.
func resolveHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOTDIR):
		return " (a component is a file, or a symlink that does not lead to a directory inside the container rootfs; fix the image or add a /run tmpfs mount)"
	case errors.Is(err, unix.ELOOP):
		return " (a symlink loop or a /proc magic link, refused)"
	case errors.Is(err, unix.EXDEV):
		return " (a path that escapes the container rootfs, refused)"
	case errors.Is(err, unix.EROFS):
		return " (the container rootfs is read-only there; add a /run tmpfs mount or create /run/northstar in the image)"
	}
	return ""
}

// Close releases the detached mount. A mount that was never attached is
// unmounted and freed by the kernel with its last reference.
func (m *Mount) Close() error { return m.fd.Close() }

// IDs are the filesystem credentials the hook creates missing directories
// with: those of the container's root user (uid/gid 0 of its user
// namespace, as seen where the hook runs), as runc does for mountpoints.
type IDs struct{ UID, GID uint32 }

// ErrTargetRefused: the target directory is somewhere the secret must not
// be mounted (another filesystem than the image's own, a kernel
// filesystem, a shared mount).
var ErrTargetRefused = errors.New("refused mount target")

// AttachInRoot moves the mount onto unsafeDir resolved inside rootfs. It must
// run in the container's mount namespace (see internal/nsenter), where rootfs
// is the runtime's path of the container root filesystem. Missing
// directories are created with the credentials creator (nil: the hook's
// own).
//
// The naive version, mount(src, filepath.Join(rootfs, unsafeDir)), follows
// symlinks the image planted in /run or /run/northstar out of the rootfs and
// mounts over a host directory (runc CVE-2019-19921, CVE-2021-30465; NVIDIA
// CVE-2024-0132). Instead the path is resolved inside rootfs by the kernel
// (openat2 RESOLVE_IN_ROOT, magic links refused), missing directories are
// created one by one below the deepest existing one, each opened without
// following anything, and move_mount targets the
// resolved directory's file descriptor, never a path string. Absolute and
// relative symlinks thus stay inside the rootfs; magic links such as
// /proc/self/root fail.
//
// Resolving inside the root is not enough: the container's mount tree has
// more than the image in it. A symlink /run -> /vol, where /vol is a host
// directory bind-mounted into the container, would make the hook (host
// root) create northstar in the host directory; /run/northstar -> /proc
// would mount over procfs (the trick of CVE-2019-16884). So the target,
// and before anything is created the deepest part of it that exists, must
// be on the container's root filesystem itself or on a tmpfs mounted
// exactly at /run, and not on a shared mount (whose mounts propagate to
// its peers, the host's among them); anything else is ErrTargetRefused.
//
// Not defended: a process racing us inside the rootfs before the container
// starts (there is none: the container's own process is blocked in runc init
// until the hooks finish), and an image whose /run/northstar is on a
// read-only filesystem (that fails closed with EROFS).
func (m *Mount) AttachInRoot(rootfs, unsafeDir string, creator *IDs) error {
	root, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs: %w", err)
	}
	defer root.Close()
	t, err := newTargetCheck(root)
	if err != nil {
		return err
	}
	// Check the deepest existing part before creating anything under it.
	existing, name, err := deepestExisting(root, unsafeDir)
	if err != nil {
		return fmt.Errorf("resolve %s in the container rootfs: %w%s", unsafeDir, err, resolveHint(err))
	}
	err = t.check(existing, name)
	if err != nil {
		existing.Close()
		return err
	}
	dir, err := mkdirAllAs(root, existing, name, unsafeDir, creator)
	existing.Close()
	if err != nil {
		return fmt.Errorf("resolve %s in the container rootfs: %w%s", unsafeDir, err, resolveHint(err))
	}
	defer dir.Close()
	var st, rst unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", unsafeDir, err)
	}
	if err := unix.Fstat(int(root.Fd()), &rst); err != nil {
		return fmt.Errorf("stat rootfs: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s in the container rootfs is not a directory", unsafeDir)
	}
	if st.Dev == rst.Dev && st.Ino == rst.Ino {
		// A symlink such as /run/northstar -> ../.. would make us shadow
		// the whole root filesystem of the container.
		return fmt.Errorf("%s in the container rootfs resolves to the rootfs itself; fix the image's symlinks", unsafeDir)
	}
	if err := t.check(dir, unsafeDir); err != nil {
		return err
	}
	if err := unix.MoveMount(int(m.fd.Fd()), "", int(dir.Fd()), "",
		unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount onto %s: %w", unsafeDir, err)
	}
	return nil
}

// OpenAPITree clones the agent's directory for one container (dir, in
// the runtime's mount namespace) as a detached bind mount, read-only,
// nosuid, nodev, noexec: connect(2) to a socket works through it, and the
// container can create nothing beside its socket.
func OpenAPITree(dir string) (*os.File, error) {
	return openAPITree(unix.AT_FDCWD, dir, 0)
}

// OpenAPITreeOf is OpenAPITree for a directory already opened (an O_PATH
// descriptor the caller resolved and checked).
func OpenAPITreeOf(dir *os.File) (*os.File, error) {
	return openAPITree(int(dir.Fd()), "", unix.AT_EMPTY_PATH)
}

func openAPITree(dirfd int, path string, flags uint) (*os.File, error) {
	fd, err := unix.OpenTree(dirfd, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|flags)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", path, err)
	}
	attr := unix.MountAttr{Attr_set: mountAttrs}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount_setattr read-only: %w", err)
	}
	return os.NewFile(uintptr(fd), "api-tree"), nil
}

// AttachAPI mounts tree (from OpenAPITree) on the APIDir of m, which must
// have been made by NewWithAPI and attached already: it runs in the
// container's mount namespace, after AttachInRoot. The target is reached
// through m's own file descriptor, never through a path inside the
// container.
func (m *Mount) AttachAPI(tree *os.File) error {
	dir, err := unix.Openat(int(m.fd.Fd()), APIDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s directory: %w", APIDir, err)
	}
	defer unix.Close(dir)
	if err := unix.MoveMount(int(tree.Fd()), "", dir, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount onto %s/%s: %w", secretfs.Dir, APIDir, err)
	}
	return nil
}
