// SPDX-License-Identifier: Apache-2.0

package keys

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// smapsEntry returns the VmFlags and Locked lines of the mapping in
// /proc/self/smaps that holds addr: the kernel's own account of what
// lockedPage asked for.
func smapsEntry(t *testing.T, addr uintptr) (flags []string, lockedKB int) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			var lo, hi uintptr
			if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err == nil {
				in = lo <= addr && addr < hi
			}
			continue
		}
		if !in {
			continue
		}
		switch fields[0] {
		case "Locked:":
			lockedKB, _ = strconv.Atoi(fields[1])
		case "VmFlags:":
			return fields[1:], lockedKB
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return nil, 0
}

func TestRootPageIsLockedAndNotDumped(t *testing.T) {
	r := testRoot(t)
	flags, lockedKB := smapsEntry(t, uintptr(unsafe.Pointer(&r.b[0])))
	has := map[string]bool{}
	for _, f := range flags {
		has[f] = true
	}
	// dd: MADV_DONTDUMP, wf: MADV_WIPEONFORK (proc(5)).
	for _, want := range []string{"dd", "wf"} {
		if !has[want] {
			t.Errorf("root key page lacks VmFlag %q: %v", want, flags)
		}
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatal(err)
	}
	switch {
	case r.Locked():
		if !has["lo"] || lockedKB == 0 {
			t.Fatalf("Locked() but the kernel says not: flags=%v Locked: %d kB", flags, lockedKB)
		}
	case lim.Cur >= uint64(os.Getpagesize()):
		t.Fatalf("root key page not locked though RLIMIT_MEMLOCK is %d", lim.Cur)
	default:
		// No room to lock and no CAP_IPC_LOCK: reported, not fatal.
		t.Logf("RLIMIT_MEMLOCK %d: key page unlocked, as reported", lim.Cur)
	}
}

func TestRootFromBytesUsesThePage(t *testing.T) {
	in := make([]byte, RootSize)
	for i := range in {
		in[i] = byte(i)
	}
	r, err := RootFromBytes(in)
	if err != nil {
		t.Fatal(err)
	}
	flags, _ := smapsEntry(t, uintptr(unsafe.Pointer(&r.b[0])))
	if !strings.Contains(strings.Join(flags, " "), "dd") {
		t.Fatalf("RootFromBytes key not on a DONTDUMP page: %v", flags)
	}
	want, err := hkdf.Key(sha256.New, in, nil, info(purposeToken, 1), 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.TokenKey(1), want) {
		t.Fatal("the key on the page derives differently from the bytes given")
	}
	r.Zero()
	for _, c := range r.b {
		if c != 0 {
			t.Fatal("Zero left key bytes on the page")
		}
	}
}
