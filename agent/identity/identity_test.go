// SPDX-License-Identifier: Apache-2.0

package identity

import (
	"regexp"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"client":                 true,
		"default/mqtt-0/broker":  true,
		"svc@example.org:443":    true,
		strings.Repeat("a", 253): true,
		strings.Repeat("a", 254): false,
		"":                       false,
		"with space":             false,
		"new\nline":              false,
		"ünïcode":                false,
		"../../etc":              true, // a name, never a path: the agent does not join it
		"quote\"":                false,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%.20q) = %v, want %v", s, got, want)
		}
	}
}

// rule is DESIGN.md §3's identity rule as written: the oracle of Valid.
var rule = regexp.MustCompile(`^[A-Za-z0-9._:@/-]{1,253}$`)

// TestValidMatchesTheRule: every byte value, alone and around the length
// bounds, is judged as the rule's expression judges it.
func TestValidMatchesTheRule(t *testing.T) {
	for c := 0; c < 256; c++ {
		for _, n := range []int{1, 2, 252, 253, 254} {
			s := strings.Repeat("a", n-1) + string([]byte{byte(c)})
			if got, want := Valid(s), rule.MatchString(s); got != want {
				t.Fatalf("Valid(%d bytes ending in %#x) = %v, the rule says %v", n, c, got, want)
			}
		}
	}
}

func FuzzValid(f *testing.F) {
	f.Add("client")
	f.Add("default/mqtt-0/broker")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := Valid(s), rule.MatchString(s); got != want {
			t.Fatalf("Valid(%q) = %v, the rule says %v", s, got, want)
		}
	})
}
