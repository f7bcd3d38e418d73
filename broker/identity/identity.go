// Package identity is the rule of what may name a container to the broker
// (DESIGN.md §3): 1-253 bytes of [A-Za-z0-9._:@/-]. It is its own leaf
// package so that the hook checks identities without linking the API's
// HTTP server.
package identity

import "regexp"

var re = regexp.MustCompile(`^[A-Za-z0-9._:@/-]{1,253}$`)

// Valid reports whether s may name a container.
func Valid(s string) bool { return re.MatchString(s) }
