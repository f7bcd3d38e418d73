// SPDX-License-Identifier: Apache-2.0

//go:build cgo

// Package prestart is C that runs before the Go runtime starts, shared
// by the fast paths of containerd-shim-northstar-v2 (shim/fastpath) and
// northstar-agent-hook (hook/agenthook/fastpath): finding the agent's
// socket in the config the way config/peek does, for the simplest form
// of the line, and one request and answer on the agent's control socket.
// A fast path links it by importing this package and includes
// prestart.h; it holds no constructor of its own.
//
// The reader is deliberately small: anything it does not expect (a
// multi-line string, an escape, another form of the line) is the Go
// code's to read with the real parser. The agent checks that the config
// named in a request is its own, so finding a socket in another file
// gains nothing.
package prestart

// #cgo CFLAGS: -O2 -Wall -Wextra -Wno-unused-parameter -std=gnu11
import "C"
