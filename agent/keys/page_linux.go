// SPDX-License-Identifier: Apache-2.0

package keys

import (
	"os"

	"golang.org/x/sys/unix"
)

// lockedPage maps one private anonymous page for key material, outside the
// Go heap so the collector never moves or copies it, and asks the kernel
// to keep it out of core dumps (MADV_DONTDUMP), out of children made by
// fork (MADV_WIPEONFORK) and out of swap (mlock). The madvise calls fail
// only on kernels older than 4.14, which northstar does not support, so
// their errors are returned; mlock depends on RLIMIT_MEMLOCK and is
// reported instead of enforced.
func lockedPage() (page []byte, locked bool, err error) {
	page, err = unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, false, os.NewSyscallError("mmap", err)
	}
	for _, advice := range []int{unix.MADV_DONTDUMP, unix.MADV_WIPEONFORK} {
		if err := unix.Madvise(page, advice); err != nil {
			unix.Munmap(page)
			return nil, false, os.NewSyscallError("madvise", err)
		}
	}
	return page, unix.Mlock(page) == nil, nil
}
