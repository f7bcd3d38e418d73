// SPDX-License-Identifier: Apache-2.0

// Command broker is the example MQTT broker: it lets a client in when the
// client's password is the northstar lifecycle secret it reads from
// --secret-file (default /run/northstar/secret). See
// examples/mqtt/internal/broker.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/northstar-oci/northstar/examples/mqtt/internal/broker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // after the first signal, a second one kills at once
	err := broker.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "broker: %v\n", err)
	}
	os.Exit(broker.ExitCode(err))
}
