// SPDX-License-Identifier: Apache-2.0

// Package shimstart is the wire format of a containerd shim `start` the
// agent serves whole (the control socket's 'W' request). Its client is
// the C fast path of containerd-shim-northstar-v2 (package shim/fastpath),
// which runs before the Go runtime starts: it sends the config file it
// found, the bundle, the container's id and its parent's pid (containerd),
// and execs the delegate the agent names, or leaves the start to the Go
// wrapper. The format is C's to write: NUL-separated fields, one
// SOCK_SEQPACKET message each way.
package shimstart

import (
	"bytes"
	"errors"
	"path/filepath"
	"strconv"
)

// Op is the request's first byte on the control socket.
const Op = 'W'

// MaxRequest bounds a request: two paths and an id, each at most PATH_MAX
// (4096) in the C client, a pid and their separators.
const MaxRequest = 3*4096 + 32

// Request is a shim start the wrapper asks the agent to serve.
type Request struct {
	// Config is the config file the wrapper found (absolute): the agent
	// serves only the starts its own config decides.
	Config string
	// Bundle is the container's bundle (absolute, clean): the wrapper's
	// working directory, or -bundle.
	Bundle string
	// ID is the container's id (-id).
	ID string
	// Parent is the wrapper's parent process, the containerd that runs
	// the shim (or a process below it): whose restart starts a new
	// secret lifecycle.
	Parent int
}

// Encode is r on the wire: Op, then the config's path, the bundle, the
// id and the parent's pid, each ended by NUL.
func (r Request) Encode() []byte {
	b := []byte{Op}
	for _, f := range []string{r.Config, r.Bundle, r.ID, strconv.Itoa(r.Parent)} {
		b = append(b, f...)
		b = append(b, 0)
	}
	return b
}

// Decode parses a request's body (after Op).
func Decode(body []byte) (Request, error) {
	f := bytes.Split(body, []byte{0})
	if len(f) != 5 || len(f[4]) != 0 {
		return Request{}, errors.New("malformed shim start request")
	}
	r := Request{Config: string(f[0]), Bundle: string(f[1]), ID: string(f[2])}
	var err error
	if r.Parent, err = strconv.Atoi(string(f[3])); err != nil || r.Parent <= 0 {
		return Request{}, errors.New("malformed shim start request: parent pid")
	}
	if !filepath.IsAbs(r.Config) {
		return Request{}, errors.New("malformed shim start request: the config's path is not absolute")
	}
	if !filepath.IsAbs(r.Bundle) || filepath.Clean(r.Bundle) != r.Bundle {
		return Request{}, errors.New("malformed shim start request: the bundle is not a clean absolute path")
	}
	if r.ID == "" {
		return Request{}, errors.New("malformed shim start request: no container id")
	}
	return r, nil
}

// The answer: one byte, then the delegate, the reason or the error.
const (
	answerServed    = 'y' // served: exec the delegate that follows
	answerNotServed = 'n' // not served: why; the Go wrapper does the start
	answerFailed    = 'e' // served, and the start fails: the error
)

// Answer is the agent's answer: served (exec delegate) or not, and err.
func Answer(delegate string, served bool, err error) []byte {
	switch {
	case !served && err == nil:
		return []byte{answerNotServed}
	case !served:
		return append([]byte{answerNotServed}, err.Error()...)
	case err != nil:
		return append([]byte{answerFailed}, err.Error()...)
	}
	return append([]byte{answerServed}, delegate...)
}
