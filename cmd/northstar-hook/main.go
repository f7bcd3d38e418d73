// SPDX-License-Identifier: Apache-2.0

// Command northstar-hook is the OCI hook that puts the lifecycle secret at
// /run/northstar/secret in a container. See package hook.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/northstar-oci/northstar/hook"
	// Before the packages whose initialisation allocates: see its doc.
	_ "github.com/northstar-oci/northstar/internal/prefault"
)

func main() {
	if err := hook.Run(context.Background(), os.Args[1:], os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "northstar-hook: %v\n", err)
		if errors.Is(err, hook.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
