// SPDX-License-Identifier: Apache-2.0

// Command hookasks is an OCI hook that sends the container's state to the
// unix socket named by its argument and exits 0 when the answer is "y",
// nothing else: the floor of a hook that has another process do its work
// (as the agent serves northstar's hook), which the bench's agent row
// stands next to. The server answers at once; whatever the agent does for
// a container comes on top.
package main

import (
	"io"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	state, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Exit(1)
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Args[1], Net: "unix"})
	if err != nil {
		os.Exit(1)
	}
	if _, err := c.Write(state); err != nil {
		os.Exit(1)
	}
	if err := c.CloseWrite(); err != nil {
		os.Exit(1)
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'y' {
		os.Exit(1)
	}
}
