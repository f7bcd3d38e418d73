// SPDX-License-Identifier: Apache-2.0

// Command execfloor execs its arguments and does nothing else: the floor of
// a Go program that hands over to another, as the northstar shim hands
// over to the runc shim. TestBenchShimPhases times it next to the shim.
package main

import (
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: execfloor PATH [ARG...]\n")
		os.Exit(2)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	os.Stderr.WriteString("execfloor: " + err.Error() + "\n")
	os.Exit(1)
}
