// SPDX-License-Identifier: Apache-2.0

// Package lifecycle names one run of the container runtime: the id a
// lifecycle secret is made for (DESIGN.md §3, "Shim"). The shim computes it
// for the containerd that runs it, the NRI plugin for the containerd at the
// other end of its connection; both get the same id for the same process,
// so however a runtime restart is seen, the store rotates once.
package lifecycle

import (
	"fmt"
	"os"
	"strings"

	"github.com/northstar-oci/northstar/internal/procstat"
)

// bootIDPath changes on every boot of the kernel.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// ID identifies one run of the container runtime whose process is pid:
//
//	boot:<kernel boot id>/pid:<pid>/start:<start time in clock ticks since boot>
//
// The start time (field 22 of /proc/<pid>/stat) tells a restarted runtime
// from an unrelated process that reuses the pid; the boot id tells two
// boots apart, where pids and start times repeat.
func ID(pid int) (string, error) {
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
	return Format(strings.TrimSpace(string(boot)), pid, start), nil
}

// Format formats the parts of a lifecycle id.
func Format(bootID string, pid int, startTicks uint64) string {
	return fmt.Sprintf("boot:%s/pid:%d/start:%d", bootID, pid, startTicks)
}

// statStartTime returns starttime, field 22 of a /proc/<pid>/stat line.
func statStartTime(stat []byte) (uint64, error) { return procstat.Field(stat, 22) }
