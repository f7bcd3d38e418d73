// SPDX-License-Identifier: Apache-2.0

package control

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// pidfdGetMntNamespace is PIDFD_GET_MNT_NAMESPACE (linux/pidfd.h,
// _IO(PIDFS_IOCTL_MAGIC 0xFF, 3); kernel 6.11+), not yet in x/sys.
const pidfdGetMntNamespace = 0xFF03

// checkClient is the server's peer policy: the uid check of checkPeer, and
// the client must live in the agent's own mount namespace. A uid alone says
// too little: root in a container without a user namespace is uid 0 here,
// and under a rootless runtime every container process maps to the
// runtime's uid. The hook runs in the runtime's namespaces at createRuntime
// (where the agent runs too); a hook inside a container's namespaces
// (createContainer) is refused and unseals from the TPM itself.
//
// The namespace comes from SO_PEERPIDFD: a pidfd names the connecting
// process itself, not a pid that could be reused meanwhile.
func checkClient(c *net.UnixConn) error {
	if err := checkPeer(c); err != nil {
		return err
	}
	var pidfd int
	if err := sockopt(c, func(fd int) (err error) {
		pidfd, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		return err
	}); err != nil {
		return fmt.Errorf("%w: SO_PEERPIDFD: %v (kernel 6.5+ needed to tell the peer's namespaces)", ErrRefused, err)
	}
	defer unix.Close(pidfd)
	same, err := sameMountNamespace(pidfd)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if !same {
		return fmt.Errorf("%w: the peer is in another mount namespace (a container?)", ErrRefused)
	}
	return nil
}

// CheckPeerSupport reports whether this kernel lets the agent tell a
// client's mount namespace (SO_PEERPIDFD, kernel 6.5+, and
// PIDFD_GET_MNT_NAMESPACE, 6.11+). Without them the agent refuses every
// client: hooks unseal from the TPM themselves, and with [api] enable no
// container can register. doctor asks.
func CheckPeerSupport() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	pidfd, err := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err != nil {
		return fmt.Errorf("SO_PEERPIDFD: %w (kernel 6.5+)", err)
	}
	defer unix.Close(pidfd)
	same, err := sameMountNamespace(pidfd)
	if err != nil {
		return err
	}
	if !same {
		return errors.New("a process's own mount namespace does not compare equal to itself")
	}
	return nil
}

// sameMountNamespace reports whether the process of pidfd shares this
// process's mount namespace.
func sameMountNamespace(pidfd int) (bool, error) {
	nsfd, err := unix.IoctlRetInt(pidfd, pidfdGetMntNamespace)
	if err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return false, fmt.Errorf("PIDFD_GET_MNT_NAMESPACE: %v (kernel 6.11+ needed)", err)
		}
		return false, fmt.Errorf("PIDFD_GET_MNT_NAMESPACE: %w", err)
	}
	defer unix.Close(nsfd)
	var peer, self unix.Stat_t
	if err := unix.Fstat(nsfd, &peer); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/thread-self/ns/mnt", &self); err != nil {
		return false, err
	}
	return peer.Dev == self.Dev && peer.Ino == self.Ino, nil
}
