// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A container's API directory is a filesystem of its own (DESIGN.md §15).
//
// The hook mounts the directory read-only in the container. A container
// with CAP_SYS_ADMIN over its mount namespace (rootful, privileged or
// given the capability) can remount that mount read-write: with a plain
// directory of the agent's behind it, it wrote into the agent's host
// directory (1 MiB planted, unbounded). So the agent mounts a small
// tmpfs on each container's directory and makes the sockets in it: what
// a container writes there lands in its own capped filesystem, which goes
// with the container, never in a directory of the agent's.
//
// A agent that may not mount (a plain non-root agent, outside any user
// namespace of its own) keeps the plain directory: its containers are
// rootless and the directory is the user's own.

// apiFSOptions cap the API filesystem: two sockets and the root take 3
// inodes and no blocks; a container that writes there gets a page or
// four and a few names.
const apiFSOptions = "size=16k,nr_inodes=16,mode=0755"

// mountAPIDir mounts the API filesystem on dir (just made, empty). It
// reports whether it did; false with a nil error when the agent may not
// mount.
func mountAPIDir(dir string) (bool, error) {
	err := unix.Mount("northstar-api", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, apiFSOptions)
	if errors.Is(err, unix.EPERM) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mount the API filesystem on %s: %w", dir, err)
	}
	return true, nil
}

// removeAPIDir unmounts the API filesystem from dir, if any, and removes
// dir: after the unmount, what is left is the agent's empty directory,
// so nothing a container put there is walked.
func removeAPIDir(dir string) error {
	for {
		// A mount the container planted over ours (through a writable
		// remount) goes too.
		if err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			break
		}
	}
	return os.RemoveAll(dir)
}
