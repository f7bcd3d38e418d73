// SPDX-License-Identifier: Apache-2.0

// Command northstar-runtime is a runc-compatible runtime for Docker, CRI-O
// and `podman --runtime`: it prepares a container for the northstar hook,
// then becomes the real runtime (runc). See package runcwrap.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/northstar-oci/northstar/runcwrap"
)

func main() {
	// Run returns only on failure; on success this process is the runtime.
	err := runcwrap.Run(context.Background(), os.Args[1:])
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
