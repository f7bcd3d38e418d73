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

// #cgo CFLAGS: -O2 -Wall -Wextra -Wno-unused-parameter -std=gnu11 -I${SRCDIR}/../../../internal/prestart
import "C"

import _ "github.com/northstar-oci/northstar/internal/prestart" // the C it calls

// Enabled reports whether this build has the fast path.
const Enabled = true
