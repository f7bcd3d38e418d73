// SPDX-License-Identifier: Apache-2.0

// Package nsenter runs Go code inside another process's mount namespace, and
// compares namespaces. It has no northstar meaning: the hook uses it to
// attach the secret's mount from the runtime's side.
package nsenter

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InMountNamespace runs fn on an OS thread that has joined the mount
// namespace of process pid, and returns fn's error.
//
// setns(CLONE_NEWNS) is refused for a thread that shares its filesystem
// attributes (root, cwd) with other threads, which every Go thread does. So a
// fresh goroutine locks itself to its thread, unshares CLONE_FS, joins the
// namespace and never unlocks: the Go runtime then terminates the tainted
// thread when the goroutine returns instead of reusing it (the pattern of
// containerd's mount helpers).
func InMountNamespace(pid int, fn func() error) error {
	// A descriptor of its own, not an os.File (which the runtime's
	// poller would be offered): this runs on every hooked start.
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mount namespace of pid %d: %w", pid, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/ns/mnt", pid), Err: err})
	}
	defer unix.Close(ns)
	return inMountNamespace(ns, fmt.Sprintf("pid %d", pid), fn)
}

// InMountNamespaceOf is InMountNamespace for the process of pidfd: a
// pidfd names the process itself, where a pid may have been reused (the
// agent, taking back a container's filesystem after it restarted, holds
// the pidfd of the container's init process). setns accepts a pidfd
// since kernel 5.8.
func InMountNamespaceOf(pidfd int, fn func() error) error {
	return inMountNamespace(pidfd, "the pidfd's process", fn)
}

func inMountNamespace(nsfd int, whose string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		// The thread's own namespace, to go back to after fn. The runtime
		// cannot end the process's main thread: when this goroutine ran
		// there, the thread is parked instead, and would stay in the
		// other namespace (keeping it alive, showing its mounts in
		// /proc/PID/mountinfo) for the rest of the process's life.
		home, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open own mount namespace: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare CLONE_FS: %w", err)
			return
		}
		if err := unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("setns into the mount namespace of %s: %w", whose, err)
			return
		}
		err = fn()
		// Best effort: a thread that cannot go back still dies, unless
		// it is the main thread.
		_ = unix.Setns(home, unix.CLONE_NEWNS)
		errc <- err
	}()
	return <-errc
}

// SameNamespace reports whether this process and pid share the namespace
// kind ("mnt", "user", ...).
func SameNamespace(pid int, kind string) (bool, error) {
	var self, other unix.Stat_t
	if err := unix.Stat("/proc/self/ns/"+kind, &self); err != nil {
		return false, fmt.Errorf("stat own %s namespace: %w", kind, err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &other); err != nil {
		return false, fmt.Errorf("stat %s namespace of pid %d: %w", kind, pid, err)
	}
	return self.Dev == other.Dev && self.Ino == other.Ino, nil
}
