// SPDX-License-Identifier: Apache-2.0

// Command hookfloor is an OCI hook that reads the container's state and
// exits 0, nothing else: the floor of any hook written in Go, which the
// bench's hook rows stand next to (a Go process starting costs what it
// costs whatever the hook then does).
package main

import (
	"io"
	"os"
)

func main() {
	if _, err := io.Copy(io.Discard, os.Stdin); err != nil {
		os.Exit(1)
	}
}
