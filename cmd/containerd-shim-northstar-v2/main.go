// Command containerd-shim-northstar-v2 is the containerd shim of runtime
// io.containerd.northstar.v2: runc's shim plus the northstar hook and
// lifecycle rotation. See package shim.
package main

import (
	"context"

	"github.com/northstar-oci/northstar/shim"
)

func main() {
	shim.Run(context.Background())
}
