// SPDX-License-Identifier: Apache-2.0

// Command client is the example MQTT client: it connects to the broker with
// the northstar lifecycle secret from --secret-file (default
// /run/northstar/secret) as its password, publishes a message and waits for
// it to come back. Exit status: 0 round trip ok, 1 failure, 2 usage,
// 3 refused by the broker. See examples/mqtt/internal/client.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/northstar-oci/northstar/examples/mqtt/internal/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // after the first signal, a second one kills at once
	err := client.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
	}
	os.Exit(client.ExitCode(err))
}
