// SPDX-License-Identifier: Apache-2.0

package control

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Namespace ioctls on a pidfd (linux/pidfd.h, PIDFS_IOCTL_MAGIC 0xFF;
// kernel 6.11+), not yet in x/sys.
const (
	pidfdGetPidNamespace = 0xFF05
)

// NS names a namespace: the device and inode of its nsfs file, which is
// how namespaces compare (ls -l /proc/PID/ns).
type NS struct{ Dev, Ino uint64 }

// pidfdNS returns the namespace the ioctl req opens for the process of
// pidfd.
func pidfdNS(pidfd int, req uint) (NS, error) {
	nsfd, err := unix.IoctlRetInt(pidfd, req)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return NS{}, fmt.Errorf("namespace of a pidfd: %v (kernel 6.11+ needed)", err)
		}
		return NS{}, fmt.Errorf("namespace of a pidfd: %w", err)
	}
	defer unix.Close(nsfd)
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		return NS{}, err
	}
	return NS{Dev: st.Dev, Ino: st.Ino}, nil
}

// MountNSOf is the mount namespace of the process of pidfd.
func MountNSOf(pidfd int) (NS, error) { return pidfdNS(pidfd, pidfdGetMntNamespace) }

// PidNSOf is the PID namespace of the process of pidfd.
func PidNSOf(pidfd int) (NS, error) { return pidfdNS(pidfd, pidfdGetPidNamespace) }

// SelfNS is this process's namespace of kind ("mnt", "pid").
func SelfNS(kind string) (NS, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/"+kind, &st); err != nil {
		return NS{}, err
	}
	return NS{Dev: st.Dev, Ino: st.Ino}, nil
}

// PeerMountNS is the mount namespace of the process at the other end of
// c, named by SO_PEERPIDFD (the connecting process itself, never a pid
// that could be reused since).
func PeerMountNS(c *net.UnixConn) (NS, error) {
	var pidfd int
	if err := sockopt(c, func(fd int) (err error) {
		pidfd, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		return err
	}); err != nil {
		return NS{}, fmt.Errorf("SO_PEERPIDFD: %w", err)
	}
	defer unix.Close(pidfd)
	return MountNSOf(pidfd)
}
