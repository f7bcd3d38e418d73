// SPDX-License-Identifier: Apache-2.0

// Package control is the protocol between the hook and the agent
// (DESIGN.md §8, §9): the agent's control socket, what travels over it,
// and the checks both ends make of each other. It is all the hook and the
// shim know of the agent; the daemon itself (package agent and its other
// sub-packages) is never linked into them.
//
// Listen and Serve are the agent's side; Fetch, FetchCurrent and Register
// the hook's. A request is one message per connection on a SOCK_SEQPACKET
// socket: 'S' asks for the secret, answered by the RecordID of the secret
// (generation, 8 bytes big endian, then the 32-byte SHA-256 of the sealed
// blob) with exactly one memfd attached by SCM_RIGHTS; 'R' and a JSON
// Registration registers a container, answered by the directory of its
// API socket.
//
// Both ends check each other with SO_PEERCRED: only uid 0 of the checking
// process's user namespace, or its own uid, is accepted, and the agent
// serves only clients in its own mount namespace. The receiver trusts
// nothing it gets: it verifies the seals and the content's format and falls
// back to the TPM on any doubt.
package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/internal/peercred"
	"github.com/northstar-oci/northstar/secretfs"
)

// FetchTimeout bounds a whole Fetch: the hook must not wait on a hung agent
// longer than a TPM unseal would take.
const FetchTimeout = 200 * time.Millisecond

// RegisterTimeout bounds a whole registration. Longer than a Fetch: a
// registration that fails fails the container's start (there is nothing
// to fall back to), and the agent makes a directory and a socket for it,
// which a busy disk can stall for a few hundred milliseconds (measured
// here: up to 0.2 s with the agent's directory on ext4; /run is tmpfs on
// most hosts).
const RegisterTimeout = 5 * time.Second

// network is SOCK_SEQPACKET: the record id and its fd arrive as one
// message, never split or merged.
const network = "unixpacket"

// msgSize is the payload: a RecordID.
const msgSize = 8 + sha256.Size

// serveTimeout bounds how long a slow client may hold the (serial) server.
const serveTimeout = time.Second

// ErrRefused: the peer at the other end of the socket is not allowed.
var ErrRefused = peercred.ErrRefused

// Source returns the memfd to serve and the id of its record. The caller
// of a Source owns the returned file and closes it, so a Source returns a
// duplicate of what it holds and can swap its memfd at any time.
type Source func() (memfd *os.File, id RecordID, err error)

// Listen creates the socket's directory with mode 0700 (or accepts it if it
// already has exactly that mode and this process's owner) and listens on
// socketPath. The directory keeps every other user away from the socket
// whatever the socket's own mode; it must never be mounted into containers.
func Listen(socketPath string) (*net.UnixListener, error) {
	if err := MakeDir(socketPath); err != nil {
		return nil, err
	}
	// A socket left by an agent that was killed blocks bind; only a socket
	// is removed, and only inside the checked directory.
	if fi, err := os.Lstat(socketPath); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", socketPath)
		}
		if err := os.Remove(socketPath); err != nil {
			return nil, fmt.Errorf("remove stale agent socket: %w", err)
		}
	}
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: socketPath, Net: network})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(socketPath, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod agent socket: %w", err)
	}
	return ln, nil
}

// MakeDir creates the directory of socketPath with mode 0700, or accepts
// it if it already has exactly that mode and this process's owner, as
// Listen does: the agent makes it before it listens, to keep the
// containers' directories there (ContainersDir).
func MakeDir(socketPath string) error {
	if !filepath.IsAbs(socketPath) {
		return fmt.Errorf("agent socket %q is not an absolute path", socketPath)
	}
	dir := filepath.Dir(socketPath)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create agent directory: %w", err)
	}
	return checkDir(dir)
}

// checkDir refuses a socket directory that others could enter or replace.
func checkDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("agent directory: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("agent directory %s is not a directory", dir)
	}
	if st.Uid != uint32(os.Geteuid()) {
		return fmt.Errorf("agent directory %s is owned by uid %d, not by this process (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if perm := st.Mode & 0o7777; perm != 0o700 {
		return fmt.Errorf("agent directory %s has mode %04o, want 0700", dir, perm)
	}
	return nil
}

// Request ops: the first byte of a client's one message.
const (
	opSecret   = 'S'
	opRegister = 'R'
	// opPrepare: prepare.go.
)

// maxRequest bounds a request message.
const maxRequest = 4 << 10

// Serve answers every connection on ln until ctx ends, then closes ln
// (removing the socket): requests for the secret with src's memfd,
// registrations with reg (nil: refused). Connections are served one at a
// time (each is a single sendmsg), but for starts served whole, up to
// maxStartsAtOnce at once.
func Serve(ctx context.Context, ln *net.UnixListener, src Source, reg Registrar) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	starts := make(chan struct{}, maxStartsAtOnce)
	defer func() {
		// The starts in flight end before the caller closes what they use.
		for range cap(starts) {
			starts <- struct{}{}
		}
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		if serveConn(c, src, reg, starts) != errHandedOff { // a refused or failed client falls back to the TPM
			c.Close()
		}
	}
}

// requestBuffers hold a request as read: large enough for a start's
// state (hookstart.MaxRequest), which every connection would otherwise
// allocate anew on the agent's heap, most of them for a request of a
// few hundred bytes.
var requestBuffers = sync.Pool{New: func() any {
	b := make([]byte, hookstart.MaxRequest+1)
	return &b
}}

// maxStartsAtOnce bounds the starts served at once (package hookstart):
// each runs the hook's work, and one that stalls (a hung filesystem under
// a container's rootfs) must not hold the starts behind it, as one
// connection at a time would; more wait in the accept queue.
const maxStartsAtOnce = 8

// errHandedOff: serveConn passed the connection to a goroutine, which
// closes it.
var errHandedOff = errors.New("handed off")

func serveConn(c *net.UnixConn, src Source, reg Registrar, starts chan struct{}) error {
	_ = c.SetDeadline(time.Now().Add(serveTimeout))
	if err := checkClient(c); err != nil {
		return err
	}
	buf := requestBuffers.Get().(*[]byte)
	defer requestBuffers.Put(buf)
	req := *buf
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(req, oob)
	if err != nil {
		return err
	}
	fds, perr := parseRights(oob[:oobn])
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "received")
		defer files[i].Close()
	}
	switch {
	case perr != nil, flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0:
		return errors.New("malformed request")
	case n == 1 && req[0] == opSecret && len(files) == 0:
	case n > 1 && n <= maxRequest && req[0] == opRegister:
		return serveRegister(c, req[1:n], files, reg)
	case n > 1 && n <= maxRequest && req[0] == opPrepare && len(files) == 0:
		return servePrepare(c, req[1:n], reg)
	case n > 1 && n <= hookstart.MaxRequest && req[0] == hookstart.Op && len(files) == 0:
		return handOff(c, req[1:n], reg, starts, serveStart)
	case n > 1 && n <= shimstart.MaxRequest && req[0] == shimstart.Op && len(files) == 0:
		return handOff(c, req[1:n], reg, starts, serveShimStart)
	default:
		return errors.New("unknown request")
	}
	memfd, id, err := src()
	if err != nil {
		return err
	}
	defer memfd.Close()
	// Never hand out something the receiver would (rightly) refuse.
	if err := secretfs.CheckSealed(memfd); err != nil {
		return err
	}
	return SendSecret(c, memfd, id)
}

// handOff serves a start (serve) on its own goroutine, at most
// maxStartsAtOnce at once, and returns errHandedOff: the goroutine closes
// c.
func handOff(c *net.UnixConn, body []byte, reg Registrar, starts chan struct{}, serve func(*net.UnixConn, []byte, Registrar) error) error {
	body = bytes.Clone(body) // the request's buffer goes back to the pool
	starts <- struct{}{}
	go func() {
		defer func() { <-starts }()
		defer c.Close()
		_ = serve(c, body, reg)
	}()
	return errHandedOff
}

// dial connects to the agent at socketPath, the whole exchange bounded by
// timeout, and checks who listens. The directory's mode should already
// guarantee that; checking costs one getsockopt.
func dial(ctx context.Context, socketPath string, timeout time.Duration) (*net.UnixConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, socketPath)
	if err != nil {
		return nil, err
	}
	c := nc.(*net.UnixConn)
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if err := checkPeer(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// checkPeer is the uid policy (internal/peercred): root of this user
// namespace or ourselves.
func checkPeer(c *net.UnixConn) error { return sockopt(c, peercred.CheckFD) }

// sockopt runs get on c's file descriptor.
func sockopt(c *net.UnixConn, get func(fd int) error) error {
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
