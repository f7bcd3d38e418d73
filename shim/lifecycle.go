package shim

import (
	"fmt"
	"os"
	"strings"

	"github.com/northstar-oci/northstar/internal/procstat"
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

// statStartTime returns starttime, field 22 of a /proc/<pid>/stat line.
func statStartTime(stat []byte) (uint64, error) { return procstat.Field(stat, 22) }

// runtimePid finds the containerd that runs this shim: the nearest ancestor,
// starting at the parent, whose executable is named containerd. containerd
// runs `start` and `delete` itself, but a runtime_path wrapper that forks
// (a script that calls us) would otherwise pass for a new containerd at
// every start and rotate the secret each time. With no such ancestor (a
// runtime we do not know, or /proc not readable) the parent it is.
func runtimePid() int {
	parent := os.Getppid()
	for pid, hops := parent, 0; pid > 1 && hops < 8; hops++ {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && isContainerd(exe) {
			return pid
		}
		ppid, err := procstat.Parent(pid)
		if err != nil {
			break
		}
		pid = ppid
	}
	return parent
}

// isContainerd reports whether exe (a /proc/PID/exe target) is a containerd
// daemon binary, not one of its shims.
func isContainerd(exe string) bool {
	base := exe[strings.LastIndexByte(exe, '/')+1:]
	base = strings.TrimSuffix(base, " (deleted)") // upgraded under a running daemon
	return base == "containerd"
}
