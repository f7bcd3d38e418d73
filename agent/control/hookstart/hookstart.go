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
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/northstar-oci/northstar/internal/peercred"
)

// Op is the request's first byte on the control socket.
const Op = 'H'

// MaxRequest bounds a request: the state (a hook reads at most 64 KiB of
// it; annotations make it long), the config's path and a pid.
const MaxRequest = 72 << 10

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
// timeout. An error wrapping ErrNotServed leaves the start to the caller
// (no agent listens, or it would not serve it); any other is the start's
// failure: what the agent said, or an exchange that broke after the
// request went out (the agent may have done part of the work, and failing
// closed is the one safe answer).
func Ask(socketPath string, r Request, timeout time.Duration) error {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socketPath, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("%w: no agent at %s: %v", ErrNotServed, socketPath, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := peercred.Check(c); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotServed, socketPath, err)
	}
	req := r.Encode()
	if len(req) > MaxRequest {
		return fmt.Errorf("%w: the state is too long for one request (%d bytes)", ErrNotServed, len(r.State))
	}
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("%w: send to the agent at %s: %v", ErrNotServed, socketPath, err)
	}
	buf := make([]byte, 16<<10)
	n, err := c.Read(buf)
	if err != nil || n == 0 {
		return fmt.Errorf("the agent at %s gave no answer (%v): an agent older than this hook? restart it", socketPath, err)
	}
	return answer(socketPath, buf[:n])
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
