// SPDX-License-Identifier: Apache-2.0

// Package peercred is the uid policy of northstar's control socket, for
// both ends: the agent checks who connected, its clients who listens.
// The kernel reports the peer's uid as seen from this process's user
// namespace (unmapped uids read as the overflow uid), so "uid 0" means
// root of our own namespace, not root of some container's.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// ErrRefused: the peer at the other end of the socket is not allowed.
var ErrRefused = errors.New("peer refused")

// Check reads SO_PEERCRED of c and refuses peers other than uid 0 and
// this process's uid.
func Check(c *net.UnixConn) error {
	var cred *unix.Ucred
	if err := Sockopt(c, func(fd int) (err error) {
		cred, err = unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		return err
	}); err != nil {
		return fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return AllowUID(cred.Uid, uint32(os.Geteuid()))
}

// Sockopt runs get on c's file descriptor.
func Sockopt(c *net.UnixConn, get func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var gerr error
	if err := raw.Control(func(fd uintptr) { gerr = get(int(fd)) }); err != nil {
		return err
	}
	return gerr
}

// AllowUID is the policy: root of this user namespace or ourselves.
func AllowUID(peer, self uint32) error {
	if peer == 0 || peer == self {
		return nil
	}
	return fmt.Errorf("%w: uid %d", ErrRefused, peer)
}
