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
	"github.com/northstar-oci/northstar/shim/served"
)

func main() {
	env := &ctl.Env{Stdout: os.Stdout, Stderr: os.Stderr, ShimStarts: served.New}
	err := ctl.Run(context.Background(), env, os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "northstarctl: %v\n", err)
		if errors.Is(err, ctl.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
