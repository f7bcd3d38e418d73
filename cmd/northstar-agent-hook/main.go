// SPDX-License-Identifier: Apache-2.0

// Command northstar-agent-hook is northstar-hook for hosts where the agent
// delivers the secret (live rotation, the API): the same hook, linking no
// TPM code, so that its process starts as fast as the runtime's exec allows.
// A start the agent does not serve (it is down, or the config has no agent)
// still gets its secret: northstar-hook, next to this binary, unseals it
// (hook.ExecUnsealer), at the cost of one more exec.
package main

import (
	"os"

	"github.com/northstar-oci/northstar/hook"
)

func main() {
	os.Exit(hook.Main("northstar-agent-hook", os.Args[1:], os.Stdin, hook.ExecUnsealer("northstar-hook"), nil))
}
