// SPDX-License-Identifier: Apache-2.0

package peercred

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestAllowUID(t *testing.T) {
	for _, c := range []struct {
		peer, self uint32
		ok         bool
	}{{0, 0, true}, {0, 1000, true}, {1000, 1000, true}, {1001, 1000, false}, {65534, 0, false}, {1000, 0, false}} {
		if err := AllowUID(c.peer, c.self); (err == nil) != c.ok {
			t.Errorf("AllowUID(%d, %d) = %v, want ok=%v", c.peer, c.self, err, c.ok)
		}
	}
}

// TestPidFD: the peer of a socket pair this process made is itself; a
// descriptor that is no socket is an error.
func TestPidFD(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if pid, err := PidFD(fds[0]); err != nil || pid != os.Getpid() {
		t.Fatalf("PidFD = %d, %v; want %d", pid, err, os.Getpid())
	}
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if pid, err := PidFD(int(f.Fd())); err == nil {
		t.Fatalf("PidFD of a regular file = %d, want an error", pid)
	}
}
