// SPDX-License-Identifier: Apache-2.0

// Package hookstart is the wire format of a start the agent serves whole
// (the control socket's 'H' request) and its client, northstar-agent-hook.
// The hook sends the OCI state the runtime gave it, as it gave it, with
// the config file it was given and its parent's pid; the agent does the
// hook's work in its own process and answers whether it did.
//
// It is a package of its own so that the hook links nothing else of the
// control socket (no store, no secret filesystem, no JSON): its process
// costs what it links and runs (docs/performance.md).
package hookstart

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/peercred"
)

// Op is the request's first byte on the control socket.
const Op = 'H'

// MaxRequest bounds a request: the state (a hook reads at most 64 KiB of
// it; annotations make it long), the config's path and a pid.
const MaxRequest = 72 << 10

// MaxAnswer is as much of an answer as the hook reads: a longer one is
// cut there.
const MaxAnswer = 16 << 10

// Request is a start the hook asks the agent to serve.
type Request struct {
	// Config is the config file the hook was given (absolute): the agent
	// serves only the starts its own config decides.
	Config string
	// Parent is the hook's parent process: the container's own process
	// when the hook runs inside the container (createContainer), which
	// the agent does not serve (it serves its own mount namespace only).
	Parent int
	// State is the OCI state as the runtime wrote it on the hook's stdin.
	State []byte
}

// Encode is r on the wire, after Op: the config's path, NUL, the parent's
// pid, NUL, the state (JSON, which holds no NUL byte).
func (r Request) Encode() []byte {
	b := make([]byte, 0, 1+len(r.Config)+1+10+1+len(r.State))
	b = append(b, Op)
	b = append(b, r.Config...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(r.Parent), 10)
	b = append(b, 0)
	return append(b, r.State...)
}

// Decode parses a request's body (after Op).
func Decode(body []byte) (Request, error) {
	config, rest, ok1 := bytes.Cut(body, []byte{0})
	parent, state, ok2 := bytes.Cut(rest, []byte{0})
	if !ok1 || !ok2 {
		return Request{}, errors.New("malformed start request")
	}
	pid, err := strconv.Atoi(string(parent))
	if err != nil || pid <= 0 {
		return Request{}, errors.New("malformed start request: parent pid")
	}
	if !filepath.IsAbs(string(config)) {
		return Request{}, errors.New("malformed start request: the config's path is not absolute")
	}
	return Request{Config: string(config), Parent: pid, State: state}, nil
}

// The answer: one byte, then the reason or the error.
const (
	answerServed    = 'y' // served, the start may go on
	answerNotServed = 'n' // not served: why; the hook does the start
	answerFailed    = 'e' // served, and the start fails: the error
)

// Answer is the agent's answer: served or not, and err.
func Answer(served bool, err error) []byte {
	switch {
	case !served && err == nil:
		return []byte{answerNotServed}
	case !served:
		return append([]byte{answerNotServed}, err.Error()...)
	case err != nil:
		return append([]byte{answerFailed}, err.Error()...)
	}
	return []byte{answerServed}
}

// ErrNotServed wraps why the agent did not serve a start (none listens,
// another config): the hook does it itself.
var ErrNotServed = errors.New("not served by the agent")

// Ask has the agent at socketPath serve the start r, waiting at most
// timeout for each of the exchange's steps. An error wrapping
// ErrNotServed leaves the start to the caller (no agent listens, it would
// not serve it, or it closed the connection without an answer); any other
// is the start's failure: what the agent said, or no answer in time (a
// hung agent: the hook would wait for it too).
//
// It speaks through the socket's descriptor (x/sys/unix), not package
// net, whose initialisation and dialer cost the hook's process more than
// the exchange itself (docs/performance.md).
func Ask(socketPath string, r Request, timeout time.Duration) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: socket: %v", ErrNotServed, err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	for _, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fmt.Errorf("%w: socket timeout: %v", ErrNotServed, err)
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: socketPath}); err != nil {
		return fmt.Errorf("%w: no agent at %s: %v", ErrNotServed, socketPath, err)
	}
	if err := peercred.CheckFD(fd); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotServed, socketPath, err)
	}
	req := r.Encode()
	if len(req) > MaxRequest {
		return fmt.Errorf("%w: the state is too long for one request (%d bytes)", ErrNotServed, len(r.State))
	}
	// One message (SOCK_SEQPACKET): written whole or not at all.
	if err := retry(func() error { _, err := unix.Write(fd, req); return err }); err != nil {
		return fmt.Errorf("%w: send to the agent at %s: %v", ErrNotServed, socketPath, err)
	}
	buf := make([]byte, MaxAnswer)
	var n int
	err = retry(func() (err error) { n, err = unix.Read(fd, buf); return err })
	if (err == nil && n == 0) || err == unix.ECONNRESET {
		// Closed without an answer: the agent is older than this hook or
		// ended before it answered (0), or refused this peer (another
		// mount namespace, a rootless runtime's) before reading the
		// request, which the kernel reports as ECONNRESET. The hook
		// decides, as it would without this one.
		return fmt.Errorf("%w: the agent at %s closed the connection without an answer", ErrNotServed, socketPath)
	}
	if err != nil {
		return fmt.Errorf("the agent at %s gave no answer: %v", socketPath, err)
	}
	return answer(socketPath, buf[:n])
}

// retry runs call until it is not interrupted: a socket with a timeout
// fails a call a signal interrupts (EINTR) instead of restarting it, and
// the Go runtime signals its threads (preemption).
func retry(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
}

// answer reads the agent's answer a.
func answer(socketPath string, a []byte) error {
	switch a[0] {
	case answerServed:
		return nil
	case answerNotServed:
		return fmt.Errorf("%w: %s", ErrNotServed, a[1:])
	case answerFailed:
		return errors.New(string(a[1:]))
	}
	return fmt.Errorf("the agent at %s gave a malformed answer", socketPath)
}
