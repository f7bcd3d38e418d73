// SPDX-License-Identifier: Apache-2.0

// Package prefault maps the megabyte of Go heap above its own first
// allocation up front, for a short-lived process on a container's start
// path: the heap the process's packages and main will grow into.
// Import it for its side effect, from the main package only:
//
//	import _ "github.com/northstar-oci/northstar/internal/prefault"
//
// Why: a process that lives 10 ms touches its heap a page at a time, and
// each first touch is a page fault. On a VM whose faults trap to the
// hypervisor, 12-16 µs each on the 2-core VM northstar's benchmarks run
// on, northstar-hook's unseal path took about 150 faults more than a Go
// hook that only reads its stdin, 2 ms of a start. madvise(2)'s
// MADV_POPULATE_WRITE (Linux 5.14) maps the pages up front without a
// trap each; docs/performance.md has the measurements, and why a megabyte.
//
// It changes nothing but timing: the kernel maps the pages a fault would
// have mapped, zero-filled, and leaves pages already mapped alone. Where
// the call fails (an older kernel, a range past the heap's mapping) the
// process faults as before.
//
// The package imports only syscall and unsafe, so that Go initialises it
// early: Go initialises, at each step, the first package in import path
// order whose imports are initialised, and this one's are as soon as
// syscall's are. In northstar-hook it comes after the runtime's own,
// internal/godebug, encoding/base64, crypto and syscall, before go-tpm,
// crypto's implementations and net (TestPrefaultInitialisedEarly).
package prefault

import (
	"syscall"
	"unsafe"
)

// Size is how much of the heap is mapped: measured for northstar-hook,
// whose unseal path's heap grows by about 150 pages after this runs; half
// a megabyte more or less was slower in each direction.
const Size = 1 << 20

// madvPopulateWrite is MADV_POPULATE_WRITE from linux/mman-common.h (the
// same on every architecture; TestConstants holds it to x/sys/unix's).
const madvPopulateWrite = 23

// first is the heap's first object this package allocates: where the heap
// is, since Go's heap grows up from the lowest free page, and the runtime
// randomises its base.
var first = new([64]byte)

// step is how much one madvise maps. The runtime maps its heap 4 MiB at a
// time at a random offset, so the megabyte after first can run past the
// mapping; a call that does stops there, and the steps before it stand.
const step = 64 << 10

// populated is how much was mapped (tests).
var populated uintptr

func init() {
	start := uintptr(unsafe.Pointer(first)) &^ (uintptr(syscall.Getpagesize()) - 1)
	for populated < Size {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start+populated, step, madvPopulateWrite); errno != 0 {
			return
		}
		populated += step
	}
}
