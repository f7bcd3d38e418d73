// SPDX-License-Identifier: Apache-2.0

// Package identity is the rule of what may name a container to the agent
// (DESIGN.md §3): 1-253 bytes of [A-Za-z0-9._:@/-]. It is its own leaf
// package so that the hook checks identities without linking the API's
// HTTP server.
package identity

// MaxLen is the longest identity, in bytes.
const MaxLen = 253

// Valid reports whether s may name a container.
//
// A loop, not a regexp: the hook links this package, and compiling
// `^[A-Za-z0-9._:@/-]{1,253}$` (253 copies of the class) cost 1.1 ms and
// 2,816 allocations at every hook start (GODEBUG=inittrace=1), a few
// percent of a container start. TestValidMatchesTheRule keeps the loop
// equal to that expression.
func Valid(s string) bool {
	if len(s) == 0 || len(s) > MaxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !allowed(s[i]) {
			return false
		}
	}
	return true
}

func allowed(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '.', '_', ':', '@', '/', '-':
		return true
	}
	return false
}
