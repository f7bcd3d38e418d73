// SPDX-License-Identifier: Apache-2.0

// Command northstar-agent-hook is the OCI hook for hosts where the agent
// runs: the agent does the hook's work, and where it does not, this
// becomes northstar-hook. See package hook/agenthook; where the agent
// serves the start, the C of hook/agenthook/fastpath does it all before
// the Go runtime starts.
package main

import (
	"fmt"
	"os"

	"github.com/northstar-oci/northstar/hook/agenthook"
	"github.com/northstar-oci/northstar/hook/agenthook/fastpath"
)

func main() {
	if err := agenthook.Run(os.Args[1:], os.Stdin, fastpath.Declined()); err != nil {
		fmt.Fprintf(os.Stderr, "northstar-agent-hook: %v\n", err)
		os.Exit(1)
	}
}
