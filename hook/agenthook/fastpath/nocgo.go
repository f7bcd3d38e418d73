// SPDX-License-Identifier: Apache-2.0

//go:build !cgo

package fastpath

// Enabled reports whether this build has the fast path.
const Enabled = false

// Declined is nil: without the fast path, the Go hook asks.
func Declined() error { return nil }
