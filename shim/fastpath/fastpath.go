// SPDX-License-Identifier: Apache-2.0

//go:build cgo

// Package fastpath is the containerd shim's `start` without the Go
// runtime: linked into containerd-shim-northstar-v2 (a blank import), its
// C constructor (fastpath.c) runs before the Go runtime starts, asks the
// agent to do the wrapper's start (package shimstart) and execs the runc
// shim; anything it does not expect leaves the start to the Go wrapper
// (package shim). Built without cgo, the package is empty and every start
// is the Go wrapper's.
//
// The binary stays static (make build links it with -static), so the
// environment containerd passes cannot preload anything into it.
package fastpath

// #cgo CFLAGS: -O2 -Wall -Wextra -Wno-unused-parameter -std=gnu11 -I${SRCDIR}/../../internal/prestart
import "C"

import _ "github.com/northstar-oci/northstar/internal/prestart" // the C it calls

// Enabled reports whether this build has the fast path.
const Enabled = true
