// SPDX-License-Identifier: Apache-2.0

// Package tpmconn holds conversations with a TPM 2.0: which transport a
// configured path names (/dev/tpmrm0, "unix:" or "tcp:" for swtpm's data
// channel), swtpm's stream protocol, dial retries, resending commands the
// TPM answers with "not now", the lock file that makes processes sharing a
// socket TPM take turns, and flushing what killed processes left loaded.
//
// The sealer (package tpmseal) says what to ask the TPM; this package only
// makes sure it is asked over one connection, by one process at a time.
package tpmconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/northstar-oci/northstar/internal/flock"
)

// Retry bounds, for commands the TPM answers with "not now" and for
// conversations whose PCRs changed under their policy session.
const (
	maxTries     = 10
	firstBackoff = 2 * time.Millisecond
	maxBackoff   = 100 * time.Millisecond
	dialTries    = 5
)

// Options names the TPM and how to share it.
type Options struct {
	// Path is "/dev/tpmrm0" (any device path), "unix:/path" (swtpm unixio)
	// or "tcp:host:port" (swtpm data port).
	Path string
	// LockPath is a file locked around every conversation, so processes
	// sharing a socket TPM take turns. Empty disables locking.
	LockPath string
	// Open overrides how the transport is opened (tests inject a simulator).
	Open func() (transport.TPMCloser, error)
}

// ErrUnreachable: the TPM could not be opened or connected to. The error's
// text says which TPM and what to check.
var ErrUnreachable = errors.New("TPM not reachable")

// Converse runs fn against a freshly opened TPM, under the lock file when
// one is configured, and closes the TPM afterwards: the hook is a short-lived
// process, so nothing is kept open between calls. Commands the TPM answers
// with TPM_RC_RETRY, _YIELDED or _TESTING are resent; a whole exchange that
// fails with TPM_RC_PCR_CHANGED is redone; objects and sessions left by
// killed processes are flushed once when the TPM runs out of room.
func Converse(ctx context.Context, opts Options, fn func(transport.TPM) error) error {
	if opts.LockPath != "" {
		unlock, err := flock.Lock(ctx, opts.LockPath)
		if err != nil {
			return fmt.Errorf("tpm: %w", err)
		}
		defer unlock()
	}
	// Connect only once we hold the lock: swtpm serves one connection at a
	// time, so a connection held while waiting would stall everyone else.
	tpm, err := open(ctx, opts)
	if err != nil {
		return err
	}
	defer tpm.Close()
	rt := retryTPM{ctx: ctx, TPM: tpm}
	backoff, flushed := firstBackoff, false
	for try := 1; ; try++ {
		err := fn(rt)
		switch {
		case err == nil || try == maxTries:
			return err
		case errors.Is(err, tpm2.TPMRCPCRChanged):
			// A PCR moved between PolicyPCR and its use. Only a new policy
			// session helps, so the exchange is redone (fn has flushed
			// everything it loaded).
			if err := sleep(ctx, backoff); err != nil {
				return err
			}
			backoff = min(2*backoff, maxBackoff)
		case !flushed && opts.LockPath != "" &&
			(errors.Is(err, tpm2.TPMRCObjectMemory) || errors.Is(err, tpm2.TPMRCSessionMemory)):
			// swtpm has no resource manager: objects and sessions of a hook
			// killed mid-exchange stay loaded, and two of them are enough to
			// make every Load fail. Holding the lock, no other northstar
			// exchange is in flight, so whatever is loaded is such a
			// leftover. (This assumes a socket TPM is northstar's alone;
			// /dev/tpmrm0 lists and flushes only this connection's handles.)
			flushed = true
			if ferr := flushLeftovers(rt); ferr != nil {
				return fmt.Errorf("%w (flushing leftovers of earlier calls: %w)", err, ferr)
			}
		default:
			return err
		}
	}
}

// flushLeftovers flushes every transient object and session the TPM holds.
func flushLeftovers(tpm transport.TPM) error {
	hs, err := LoadedHandles(tpm)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tpm); err != nil {
			return fmt.Errorf("tpm2.FlushContext %#x: %w", uint32(h), err)
		}
	}
	return nil
}

// LoadedHandles lists the transient objects and the loaded and saved sessions.
func LoadedHandles(tpm transport.TPM) ([]tpm2.TPMHandle, error) {
	var all []tpm2.TPMHandle
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("tpm2.GetCapability (handles): %w", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, fmt.Errorf("tpm2.GetCapability (handles): %w", err)
		}
		all = append(all, hs.Handle...)
	}
	return all, nil
}

// retryTPM resends a command the TPM answered with TPM_RC_RETRY,
// TPM_RC_YIELDED or TPM_RC_TESTING. The TPM did not execute it, so the same
// bytes, session nonces and HMACs included, are still valid; this also covers
// the FlushContext calls in defers, which nothing else would retry.
type retryTPM struct {
	ctx context.Context
	transport.TPM
}

func (r retryTPM) Send(cmd []byte) ([]byte, error) {
	backoff := firstBackoff
	for try := 1; ; try++ {
		rsp, err := r.TPM.Send(cmd)
		if err != nil || try == maxTries || !notNow(rsp) {
			return rsp, err
		}
		if err := sleep(r.ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// notNow reports whether rsp is a TPM warning that asks to send the command again.
func notNow(rsp []byte) bool {
	if len(rsp) < 10 {
		return false
	}
	switch tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])) {
	case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting:
		return true
	}
	return false
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// open connects to the TPM named by opts.Path.
func open(ctx context.Context, opts Options) (transport.TPMCloser, error) {
	if opts.Open != nil {
		tpm, err := opts.Open()
		if err != nil {
			return nil, &noTPMError{fmt.Errorf("tpm: open: %w", err)}
		}
		return tpm, nil
	}
	path := opts.Path
	var (
		tpm transport.TPMCloser
		err error
	)
	switch {
	case strings.HasPrefix(path, "unix:"):
		tpm, err = dialStream(ctx, "unix", strings.TrimPrefix(path, "unix:"))
	case strings.HasPrefix(path, "tcp:"):
		tpm, err = dialStream(ctx, "tcp", strings.TrimPrefix(path, "tcp:"))
	default:
		tpm, err = linuxtpm.Open(path)
	}
	if err != nil {
		return nil, openError(path, err)
	}
	return tpm, nil
}

// openError says which TPM could not be reached and what to check, in one
// line. errors.Is(err, ErrUnreachable) holds, as does errors.Is with the errno.
func openError(path string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = errno // "connection refused", not "dial unix /x: connect: connection refused"
	}
	hint := "is swtpm/the TPM running? check [tpm] path in the config"
	switch {
	case errors.Is(err, fs.ErrPermission):
		hint = "run as root or give this user read/write access (the 'tss' group for /dev/tpmrm0)"
	case errors.Is(err, syscall.EAGAIN):
		hint = "swtpm is busy with another client (it serves one at a time and queues none); callers must share the lock file"
	}
	return &noTPMError{fmt.Errorf("tpm: open %s: %w; %s", path, err, hint)}
}

// noTPMError marks an unreachable TPM as ErrUnreachable without adding its
// text to a message that already says what is wrong.
type noTPMError struct{ err error }

func (e *noTPMError) Error() string   { return e.err.Error() }
func (e *noTPMError) Unwrap() []error { return []error{e.err, ErrUnreachable} }

// dialStream connects to swtpm's data channel. Retries cover a swtpm that is
// restarting (ECONNREFUSED) or busy with a full accept backlog (EAGAIN: Go
// connects unix sockets non-blocking).
func dialStream(ctx context.Context, network, addr string) (transport.TPMCloser, error) {
	var d net.Dialer
	backoff := 5 * time.Millisecond
	for try := 1; ; try++ {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			return newStreamTPM(ctx, conn), nil
		}
		if try == dialTries || !(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EAGAIN)) {
			return nil, err
		}
		if err := sleep(ctx, backoff); err != nil {
			return nil, err
		}
		backoff *= 2
	}
}

// streamTPM speaks the raw TPM 2.0 command protocol over one stream
// connection, which is what swtpm's data channel (unixio or tcp) expects:
// write a command, read one response whose size is in its 10-byte header.
//
// Not go-tpm's linuxudstpm, which reconnects for every command and so lets
// other clients interleave mid-conversation; not go-tpm's tcp, which speaks
// the MS simulator protocol and also dials a platform port, where swtpm has
// its own, different control channel.
type streamTPM struct {
	conn net.Conn
	stop func() bool
}

// MaxMessage bounds a command or response; TPM 2.0 buffers are a few KiB.
const MaxMessage = 64 << 10

func newStreamTPM(ctx context.Context, conn net.Conn) *streamTPM {
	// Cancelling ctx unblocks a pending read or write.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return &streamTPM{conn: conn, stop: stop}
}

// Send implements transport.TPM.
func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	return ReadMessage(s.conn)
}

// ReadMessage reads one TPM 2.0 command or response from r: a 10-byte
// header (tag u16, size u32, code u32, big-endian) whose size counts the
// whole message, then the rest. A size below the header's or above
// MaxMessage is an error, so a peer cannot make it allocate more.
func ReadMessage(r io.Reader) ([]byte, error) {
	var hdr [10]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > MaxMessage {
		return nil, fmt.Errorf("tpm: message size %d out of range", size)
	}
	msg := make([]byte, size)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[len(hdr):]); err != nil {
		return nil, err
	}
	return msg, nil
}

// Close implements transport.TPMCloser.
func (s *streamTPM) Close() error {
	s.stop()
	return s.conn.Close()
}
