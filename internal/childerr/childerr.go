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

// From is the error of a child that failed: its stderr, trimmed, without
// its program's "name: " prefix; else, when it said nothing, how it
// exited (waitErr).
func From(stderr string, waitErr error) error {
	msg := strings.TrimSpace(stderr)
	if i := strings.Index(msg, ": "); i >= 0 && !strings.Contains(msg[:i], " ") {
		msg = msg[i+2:]
	}
	if msg == "" {
		msg = waitErr.Error()
	}
	return errors.New(msg)
}
