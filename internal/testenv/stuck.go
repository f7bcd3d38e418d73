// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"net"
	"testing"
)

// NeverAnswers listens on the unix socket path and accepts every
// connection, then neither reads nor answers: a peer that hung (a TPM that
// never answers). The connections close when the test ends.
func NeverAnswers(tb testing.TB, path string) {
	tb.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
}
