// SPDX-License-Identifier: Apache-2.0

// Package procstat reads fields of /proc/<pid>/stat, where the command name
// (field 2) is in parentheses and may itself hold spaces and parentheses.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/northstar-oci/northstar/internal/capped"
)

// Field returns field n (1-based, n >= 3) of a stat line as a number.
// Fields are counted after the command name's last ')'.
func Field(stat []byte, n int) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no command name")
	}
	// After ") " comes field 3 (state).
	f := strings.Fields(string(stat[i+1:]))
	idx := n - 3
	if n < 3 || len(f) <= idx {
		return 0, errors.New("malformed /proc stat: too few fields")
	}
	v, err := strconv.ParseUint(f[idx], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed /proc stat: field %d %q", n, f[idx])
	}
	return v, nil
}

// StartTime returns pid's start time (field 22, clock ticks since boot),
// which tells a process from a later one that reuses its pid.
func StartTime(pid int) (uint64, error) {
	stat, err := readProc(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return Field(stat, 22)
}

// Parent returns pid's parent (field 4).
func Parent(pid int) (int, error) {
	stat, err := readProc(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	p, err := Field(stat, 4)
	return int(p), err
}

// SelfParent returns this process's parent as /proc sees it: in the pid
// namespace /proc was mounted in, which is not this process's own when it
// runs in a pid namespace of a container before pivot_root (a
// createContainer hook sees its parent, the container's init, as pid 1,
// and the host's /proc still mounted).
func SelfParent() (int, error) {
	stat, err := readProc("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	p, err := Field(stat, 4)
	return int(p), err
}

// PidfdPid returns the pid of the process pidfd refers to, in this
// process's pid namespace, from /proc/self/fdinfo: -1 once it has exited
// (kernel 5.x and later), 0 when it is not in our pid namespace.
func PidfdPid(pidfd int) (int, error) {
	data, err := readProc(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("not a pidfd (no Pid: in its fdinfo)")
}

// readProc reads a small file of /proc (a few hundred bytes) without an
// os.File (capped.ReadFile): the hook reads these on a container's start.
func readProc(path string) ([]byte, error) {
	return capped.ReadFile(path, 64<<10, path)
}
