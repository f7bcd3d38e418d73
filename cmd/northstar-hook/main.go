// SPDX-License-Identifier: Apache-2.0

// Command northstar-hook is the OCI hook that puts the lifecycle secret at
// /run/northstar/secret in a container, on every path: served by the agent,
// or unsealed here from the TPM. See packages hook and hook/unseal.
package main

import (
	"context"
	"os"

	"github.com/northstar-oci/northstar/hook"
	"github.com/northstar-oci/northstar/hook/unseal"
)

func main() {
	os.Exit(hook.Main("northstar-hook", os.Args[1:], os.Stdin, unseal.Here,
		map[string]func(ctx context.Context, args []string) error{hook.UnsealCommand: unseal.Main}))
}
