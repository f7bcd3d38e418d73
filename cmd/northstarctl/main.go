// SPDX-License-Identifier: Apache-2.0

// Command northstarctl creates, rotates and inspects the northstar lifecycle
// secret. See package ctl.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/northstar-oci/northstar/ctl"
)

func main() {
	err := ctl.Run(context.Background(), &ctl.Env{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "northstarctl: %v\n", err)
		if errors.Is(err, ctl.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
