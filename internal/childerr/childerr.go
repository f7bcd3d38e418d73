// SPDX-License-Identifier: Apache-2.0

// Package childerr reads the error of a northstar child process (the
// agent's unseal and key children, the rotation child of the agent and of
// the runtime wrappers): the one line its main printed on stderr,
// "northstarctl: <cause>", becomes the parent's own cause, without a
// second program name in the line the user reads.
package childerr

import (
	"errors"
	"strings"
)

// From is the error of a child that failed: the last line of its stderr
// that has a program's "name: " prefix, without it (a usage text before
// it is left out; a Go panic's line, "panic: ...", is kept whole); else
// its stderr, trimmed; else, when it said nothing, how it exited
// (waitErr).
func From(stderr string, waitErr error) error {
	msg := strings.TrimSpace(stderr)
	lines := strings.Split(msg, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if j := strings.Index(l, ": "); j > 0 && !strings.ContainsAny(l[:j], " \t") {
			if l[:j] == "panic" {
				return errors.New(l)
			}
			return errors.New(l[j+2:])
		}
	}
	if msg == "" {
		msg = waitErr.Error()
	}
	return errors.New(msg)
}
