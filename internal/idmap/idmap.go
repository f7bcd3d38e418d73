// SPDX-License-Identifier: Apache-2.0

// Package idmap reads a process's uid_map and gid_map and translates ids
// through them: the hook uses it to give the secret file to the container's
// user when the container has its own user namespace.
package idmap

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mapping is one line of a uid_map or gid_map.
type Mapping struct {
	Inside, Outside, Count uint32
}

// Read reads /proc/<pid>/uid_map or gid_map (which = "uid" or "gid").
// Read from another user namespace, the outside ids are relative to the
// reader's namespace, which is exactly the translation the hook needs.
func Read(pid int, which string) ([]Mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s_map", pid, which))
	if err != nil {
		return nil, fmt.Errorf("read %s_map of pid %d: %w", which, pid, err)
	}
	defer f.Close()
	maps, err := Parse(f, which)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return maps, nil
}

// Parse parses the text of a uid_map or gid_map (which names it in errors).
func Parse(r io.Reader, which string) ([]Mapping, error) {
	var maps []Mapping
	sc := bufio.NewScanner(r)
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
		maps = append(maps, Mapping{Inside: v[0], Outside: v[1], Count: v[2]})
	}
	return maps, sc.Err()
}

// ToOutside translates an id of the inner namespace through maps.
func ToOutside(maps []Mapping, id uint32) (uint32, bool) {
	for _, m := range maps {
		if id >= m.Inside && uint64(id) < uint64(m.Inside)+uint64(m.Count) {
			return m.Outside + (id - m.Inside), true
		}
	}
	return 0, false
}

// HostUID is this process's effective uid as the parent user namespace
// sees it (through /proc/self/uid_map): the host's uid of the user a
// rootless runtime runs as "root".
func HostUID() (uint32, error) {
	maps, err := Read(os.Getpid(), "uid")
	if err != nil {
		return 0, err
	}
	euid := uint32(os.Geteuid())
	uid, ok := ToOutside(maps, euid)
	if !ok {
		return 0, fmt.Errorf("uid %d is not mapped in this user namespace", euid)
	}
	return uid, nil
}
