// SPDX-License-Identifier: Apache-2.0

//go:build cgo

// Package fastpath is northstar-agent-hook without the Go runtime: linked
// into the hook (a blank import), its C constructor (fastpath.c) runs
// before the Go runtime starts, sends the agent the container's state
// (package hookstart, the control socket's 'H' request) and exits with
// the agent's answer; anything it does not expect leaves the start to the
// Go hook (package hook/agenthook), with the state it read given back on
// stdin. Built without cgo, the package is empty and every start is the
// Go hook's.
//
// The binary stays static (make build links it with -static), so the
// environment a runtime passes its hooks cannot preload anything into it.
package fastpath

/*
#cgo CFLAGS: -O2 -Wall -Wextra -Wno-unused-parameter -std=gnu11 -I${SRCDIR}/../../../internal/prestart
const char *northstar_agent_hook_declined(void);
*/
import "C"

import (
	"errors"

	_ "github.com/northstar-oci/northstar/internal/prestart" // the C it calls
)

// Enabled reports whether this build has the fast path.
const Enabled = true

// Declined is why the agent did not serve the start the fast path asked
// it for (no agent, a connection closed unanswered, its "not served"): the
// Go hook becomes northstar-hook without asking again. nil when the fast
// path did not ask.
func Declined() error {
	why := C.northstar_agent_hook_declined()
	if why == nil {
		return nil
	}
	return errors.New(C.GoString(why))
}
