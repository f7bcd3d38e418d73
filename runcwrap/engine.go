// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/peercred"
	"github.com/northstar-oci/northstar/internal/procstat"
)

// The engine is the containerd whose restart starts a new secret lifecycle
// (DESIGN.md §3, "Shim"): for the runtime wrapper as for the shim, the
// lifecycle id is that containerd's (lifecycle.ID), so both, and the NRI
// plugin, rotate once for one restart.
//
// The wrapper is run by the engine's runc shim, not by containerd:
// containerd runs `containerd-shim-runc-v2 start`, which starts the shim's
// daemon and exits; the daemon, reparented to init or a subreaper, runs
// the runtime binary (Docker's "runtimes" path, containerd's BinaryName)
// for each container. So the parent chain does not reach containerd. The
// shim's daemon was given containerd's address (-address, where it
// publishes events), and containerd listens there: the credentials the
// kernel recorded when containerd called listen(2) on that socket name its
// process (SO_PEERCRED on a connected unix socket), whatever its binary is
// called, wherever its pid file is, in whatever directory Docker's
// --exec-root put it. Connecting and closing without a byte costs about
// 0.1 ms, and gRPC does not log a connection closed before its preface.
//
// Without a containerd shim among the ancestors (podman and CRI-O run the
// runtime through conmon, a user runs it by hand), the nearest ancestor
// named containerd is the engine (containerd's v1 runtime ran runc as its
// child), else there is none, and the wrapper does not rotate, as the hook
// alone does not (podman's and CRI-O's hooks.d).

// engine is the process whose lifecycle the secret follows.
type engine struct {
	pid int
	how string // how it was found, for messages
}

// maxHops bounds the walk up the parent chain.
const maxHops = 8

// findEngine finds the engine of the runtime process whose parent is
// parent. A zero engine and no error: none.
func findEngine(parent int) (engine, error) {
	for pid, hops := parent, 0; pid > 1 && hops < maxHops; hops++ {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil {
			switch base := exeBase(exe); {
			case base == "containerd":
				return engine{pid: pid, how: "parent process " + exe}, nil
			case strings.HasPrefix(base, "containerd-shim"):
				return engineOfShim(pid)
			}
		}
		ppid, err := procstat.Parent(pid)
		if err != nil {
			break
		}
		pid = ppid
	}
	return engine{}, nil
}

// exeBase is the file name of a /proc/PID/exe target; a binary replaced
// under a running process (a package upgrade) reads " (deleted)".
func exeBase(exe string) string {
	base := exe[strings.LastIndexByte(exe, '/')+1:]
	return strings.TrimSuffix(base, " (deleted)")
}

// engineOfShim finds the containerd that the runc shim process shimPid
// serves, by the address on its command line.
func engineOfShim(shimPid int) (engine, error) {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", shimPid))
	if err != nil {
		return engine{}, fmt.Errorf("read the runc shim's command line: %w", err)
	}
	addr := shimAddress(cmdline)
	if addr == "" {
		return engine{}, fmt.Errorf("the runc shim (pid %d) has no -address: cannot tell which containerd runs it", shimPid)
	}
	pid, err := listenerPid(addr)
	if err != nil {
		return engine{}, fmt.Errorf("find the containerd at %s: %w", addr, err)
	}
	return engine{pid: pid, how: "containerd listening at " + addr}, nil
}

// shimAddress returns the value of -address (or --address, -address=) in a
// shim's NUL-separated command line: containerd's socket, as containerd
// passes it to every shim (runtime v2, and v1's containerd-shim).
func shimAddress(cmdline []byte) string {
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !isFlag(a) {
			continue
		}
		name, value, hasValue := splitFlag(a)
		if name != "address" {
			continue
		}
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		return strings.TrimPrefix(value, "unix://")
	}
	return ""
}

// listenerPid returns the pid of the process that listens on the unix
// socket at path: the peer credentials a connected client gets are those
// of the listening socket's creator at listen(2) time.
func listenerPid(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrUnix{Name: path}
	// A full accept backlog (containerd busy starting many tasks) makes a
	// non-blocking connect fail with EAGAIN: retry for a while rather than
	// block without bound.
	for deadline := time.Now().Add(5 * time.Second); ; {
		err = unix.Connect(fd, sa)
		if !errors.Is(err, unix.EAGAIN) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	return peercred.PidFD(fd)
}
