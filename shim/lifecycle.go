package shim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// bootIDPath changes on every boot of the kernel.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// lifecycleID identifies one run of the container runtime whose process is
// pid (containerd, the parent of `containerd-shim-northstar-v2 start`):
//
//	boot:<kernel boot id>/pid:<pid>/start:<start time in clock ticks since boot>
//
// The start time (field 22 of /proc/<pid>/stat) tells a restarted runtime
// from an unrelated process that reuses the pid; the boot id tells two
// boots apart, where pids and start times repeat.
func lifecycleID(pid int) (string, error) {
	boot, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("read kernel boot id: %w", err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", fmt.Errorf("read runtime process %d: %w", pid, err)
	}
	start, err := statStartTime(stat)
	if err != nil {
		return "", fmt.Errorf("runtime process %d: %w", pid, err)
	}
	return formatLifecycleID(strings.TrimSpace(string(boot)), pid, start), nil
}

// formatLifecycleID formats the parts of a lifecycle id.
func formatLifecycleID(bootID string, pid int, startTicks uint64) string {
	return fmt.Sprintf("boot:%s/pid:%d/start:%d", bootID, pid, startTicks)
}

// statStartTime returns starttime, field 22 of a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so fields are counted after its last ')'.
func statStartTime(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no command name")
	}
	// After ") " comes field 3 (state); starttime is field 22.
	f := strings.Fields(string(stat[i+1:]))
	const idx = 22 - 3
	if len(f) <= idx {
		return 0, errors.New("malformed /proc stat: too few fields")
	}
	v, err := strconv.ParseUint(f[idx], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed /proc stat: starttime %q", f[idx])
	}
	return v, nil
}
