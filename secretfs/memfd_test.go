// SPDX-License-Identifier: Apache-2.0

package secretfs

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSealedMemfdIsImmutable(t *testing.T) {
	f, err := NewSealedMemfd("test", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := CheckSealed(f); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMemfd(f)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadMemfd = %q, %v", got, err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("write to sealed memfd: err = %v, want EPERM", err)
	}
	if err := f.Truncate(0); !errors.Is(err, unix.EPERM) {
		t.Errorf("truncate sealed memfd: err = %v, want EPERM", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); !errors.Is(err, unix.EPERM) {
		t.Errorf("adding a seal after F_SEAL_SEAL: err = %v, want EPERM", err)
	}
	// Writable mappings are refused too.
	if _, err := unix.Mmap(int(f.Fd()), 0, 5, unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		t.Error("shared writable mmap of a sealed memfd succeeded")
	}
}

func TestCheckSealedRefusesUnsealed(t *testing.T) {
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "unsealed")
	defer f.Close()
	if err := CheckSealed(f); !errors.Is(err, ErrNotSealed) {
		t.Errorf("unsealed memfd: err = %v, want ErrNotSealed", err)
	}
	// Partly sealed (no F_SEAL_WRITE) is refused as well.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		t.Fatal(err)
	}
	if err := CheckSealed(f); !errors.Is(err, ErrNotSealed) {
		t.Errorf("memfd without F_SEAL_WRITE: err = %v, want ErrNotSealed", err)
	}
	tmp, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	if err := CheckSealed(tmp); !errors.Is(err, ErrNotSealed) {
		t.Errorf("regular file: err = %v, want ErrNotSealed", err)
	}
	if _, err := ReadMemfd(tmp); !errors.Is(err, ErrNotSealed) {
		t.Errorf("ReadMemfd of a regular file: err = %v, want ErrNotSealed", err)
	}
}
