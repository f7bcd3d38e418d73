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
// start; on a kernel without MADV_POPULATE_WRITE, nothing is.
func TestHeapMapped(t *testing.T) {
	if populated == 0 {
		if populateWorks(t) {
			t.Fatal("nothing was mapped, though this kernel has MADV_POPULATE_WRITE")
		}
		t.Log("this kernel has no MADV_POPULATE_WRITE (Linux 5.14): nothing mapped, as documented")
		return
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

// populateWorks reports whether madvise(MADV_POPULATE_WRITE) works on a
// fresh anonymous mapping.
func populateWorks(t *testing.T) bool {
	page := unix.Getpagesize()
	m, err := unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	return unix.Madvise(m, unix.MADV_POPULATE_WRITE) == nil
}

func mincore(addr, length uintptr, vec []byte) error {
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, addr, length, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return errno
	}
	return nil
}
