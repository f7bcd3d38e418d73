// SPDX-License-Identifier: Apache-2.0

// Package peercred is the uid policy of northstar's control socket, for
// both ends: the agent checks who connected, its clients who listens; and
// the pid of the process at the other end of a unix socket.
// The kernel reports the peer's uid as seen from this process's user
// namespace (unmapped uids read as the overflow uid), so "uid 0" means
// root of our own namespace, not root of some container's.
//
// It works on a socket's descriptor, not a net.Conn, so that
// northstar-agent-hook links no net package (docs/performance.md).
package peercred

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrRefused: the peer at the other end of the socket is not allowed.
var ErrRefused = errors.New("peer refused")

// CheckFD reads SO_PEERCRED of the unix socket fd and refuses peers
// other than uid 0 and this process's uid.
func CheckFD(fd int) error {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return AllowUID(cred.Uid, uint32(os.Geteuid()))
}

// PidFD returns the pid of the process at the other end of the unix
// socket fd (SO_PEERCRED: the connecting process, or the listening
// socket's creator), as this process's pid namespace numbers it. The
// kernel reports 0 for a process in a pid namespace this one cannot see:
// an error, never a pid.
func PidFD(fd int) (int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if cred.Pid <= 0 {
		return 0, errors.New("SO_PEERCRED names no process: the peer is in a pid namespace this process cannot see")
	}
	return int(cred.Pid), nil
}

// AllowUID is the policy: root of this user namespace or ourselves.
func AllowUID(peer, self uint32) error {
	if peer == 0 || peer == self {
		return nil
	}
	return fmt.Errorf("%w: uid %d", ErrRefused, peer)
}
