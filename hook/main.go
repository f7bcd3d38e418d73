// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Main runs a hook binary named name: Run, or what the binary gives for
// its other commands (other: nil when it has none), its error printed as
// one line; it returns the exit code (2 for a usage error).
func Main(name string, args []string, stdin io.Reader, unseal Unsealer, other map[string]func(context.Context, []string) error) int {
	ctx := context.Background()
	var err error
	if len(args) > 0 && other[args[0]] != nil {
		err = other[args[0]](ctx, args[1:])
	} else {
		err = Run(ctx, args, stdin, unseal)
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	if errors.Is(err, ErrUsage) {
		return 2
	}
	return 1
}
