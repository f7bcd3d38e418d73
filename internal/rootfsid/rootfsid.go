// SPDX-License-Identifier: Apache-2.0

// Package rootfsid names a container's root filesystem for the
// measured-container log (docs/attestation.md): what it is made of, in
// words a verifier can compare with what it expects.
//
//   - overlay: "overlay lowerdir=L1:L2:..." — the image's layers, from the
//     mount's super options (the lower layers are the image; the upper
//     one is the container's own writes, which change as it runs).
//   - anything else: "<fstype> dev=MAJOR:MINOR ino=N" — the directory's
//     device and inode, which name it on this host while it exists.
package rootfsid

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Of names the root filesystem at path, whose mounts are listed in
// mountinfo (/proc/self/mountinfo for a path in the caller's mount
// namespace, /proc/PID/mountinfo for /proc/PID/root).
func Of(path, mountinfo string) (string, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_MNT_ID, &st); err != nil {
		return "", fmt.Errorf("statx %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return "", fmt.Errorf("statfs %s: %w", path, err)
	}
	if fs.Type == unix.OVERLAYFS_SUPER_MAGIC && st.Mask&unix.STATX_MNT_ID != 0 {
		if lower, err := overlayLower(mountinfo, st.Mnt_id); err == nil && lower != "" {
			return "overlay lowerdir=" + lower, nil
		}
	}
	return fmt.Sprintf("%s dev=%d:%d ino=%d", fsName(fs.Type), st.Dev_major, st.Dev_minor, st.Ino), nil
}

// overlayLower returns the lowerdir of mount id in mountinfo.
func overlayLower(mountinfo string, id uint64) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := strconv.FormatUint(id, 10) + " "
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, want) {
			continue
		}
		// ... - fstype source superoptions
		_, post, ok := strings.Cut(line, " - ")
		if !ok {
			return "", nil
		}
		fields := strings.Fields(post)
		if len(fields) < 3 {
			return "", nil
		}
		for _, o := range strings.Split(fields[2], ",") {
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				return v, nil
			}
		}
		return "", nil
	}
	return "", sc.Err()
}

// fsName names the common filesystem types by their magic.
func fsName(t int64) string {
	switch t {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.SQUASHFS_MAGIC:
		return "squashfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return fmt.Sprintf("fs:%#x", t)
}
