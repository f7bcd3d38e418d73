// SPDX-License-Identifier: Apache-2.0

package prefault

import (
	"go/build"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestConstants(t *testing.T) {
	if madvPopulateWrite != unix.MADV_POPULATE_WRITE {
		t.Fatalf("madvPopulateWrite = %d, x/sys/unix says %d", madvPopulateWrite, unix.MADV_POPULATE_WRITE)
	}
}

// TestImportsOnlyTheRuntime: the package's place in the order of
// initialisation depends on importing nothing that initialises late.
func TestImportsOnlyTheRuntime(t *testing.T) {
	p, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"syscall", "unsafe"}; !slices.Equal(p.Imports, want) {
		t.Fatalf("imports %v, want %v", p.Imports, want)
	}
}

// TestHeapMapped: every page init says it mapped is resident when tests
// start, though the test binary has used less of its heap than that.
func TestHeapMapped(t *testing.T) {
	if populated == 0 {
		t.Fatal("nothing was mapped")
	}
	page := uintptr(unix.Getpagesize())
	start := uintptr(unsafe.Pointer(first)) &^ (page - 1)
	vec := make([]byte, populated/page)
	if err := mincore(start, populated, vec); err != nil {
		t.Fatalf("mincore: %v", err)
	}
	absent := 0
	for _, v := range vec {
		if v&1 == 0 {
			absent++
		}
	}
	if absent > 0 {
		t.Fatalf("%d of the %d pages after the heap's first object are not resident", absent, len(vec))
	}
	t.Logf("%d KiB mapped", populated>>10)
}

func mincore(addr, length uintptr, vec []byte) error {
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, addr, length, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return errno
	}
	return nil
}
