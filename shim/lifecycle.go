// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"fmt"
	"os"
	"strings"

	"github.com/northstar-oci/northstar/internal/procstat"
)

// runtimeProc is the process that runs this shim's actions.
type runtimeProc struct {
	pid int
	exe string // its /proc/PID/exe, "" when unreadable
}

// findRuntime finds the containerd that runs this shim: the nearest
// ancestor, starting at the parent, whose executable is named containerd.
// containerd runs `start` and `delete` itself, but a runtime_path wrapper
// that forks (a script that calls us) would otherwise pass for a new
// containerd at every start and rotate the secret each time. With no such
// ancestor (a runtime we do not know, or /proc not readable) the parent
// it is.
func findRuntime() runtimeProc { return runtimeFrom(os.Getppid()) }

// runtimeFrom is findRuntime for a process whose parent is parentPid.
func runtimeFrom(parentPid int) runtimeProc {
	parent := runtimeProc{pid: parentPid}
	for pid, hops := parent.pid, 0; pid > 1 && hops < 8; hops++ {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if pid == parent.pid {
			parent.exe = exe
		}
		if err == nil && isContainerd(exe) {
			return runtimeProc{pid: pid, exe: exe}
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
