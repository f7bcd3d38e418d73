// SPDX-License-Identifier: Apache-2.0

// Command containerd-shim-northstar-v2 is the containerd shim of runtime
// io.containerd.northstar.v2: it prepares a container for the northstar
// hook, then becomes the host's runc shim. See package shim.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/northstar-oci/northstar/shim"
	// The start's fast path, run before the Go runtime (C): see the package.
	_ "github.com/northstar-oci/northstar/shim/fastpath"
)

func main() {
	// Run returns only on failure; on success this process is the delegate.
	err := shim.Run(context.Background(), os.Args[1:])
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
