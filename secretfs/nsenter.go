package secretfs

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

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
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("open mount namespace of pid %d: %w", pid, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare CLONE_FS: %w", err)
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("setns into mount namespace of pid %d: %w", pid, err)
			return
		}
		errc <- fn()
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

// IDMapping is one line of a uid_map or gid_map.
type IDMapping struct {
	Inside, Outside, Count uint32
}

// ReadIDMap reads /proc/<pid>/uid_map or gid_map (which = "uid" or "gid").
// Read from another user namespace, the outside ids are relative to the
// reader's namespace, which is exactly the translation the hook needs.
func ReadIDMap(pid int, which string) ([]IDMapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s_map", pid, which))
	if err != nil {
		return nil, fmt.Errorf("read %s_map of pid %d: %w", which, pid, err)
	}
	defer f.Close()
	var maps []IDMapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			return nil, fmt.Errorf("malformed %s_map line %q", which, sc.Text())
		}
		var v [3]uint32
		for i, s := range fs {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("malformed %s_map line %q", which, sc.Text())
			}
			v[i] = uint32(n)
		}
		maps = append(maps, IDMapping{Inside: v[0], Outside: v[1], Count: v[2]})
	}
	return maps, sc.Err()
}

// MapToOutside translates an id of the inner namespace through maps.
func MapToOutside(maps []IDMapping, id uint32) (uint32, bool) {
	for _, m := range maps {
		if id >= m.Inside && uint64(id) < uint64(m.Inside)+uint64(m.Count) {
			return m.Outside + (id - m.Inside), true
		}
	}
	return 0, false
}
