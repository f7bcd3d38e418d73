package identity

import (
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
		"../../etc":              true, // a name, never a path: the broker does not join it
		"quote\"":                false,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%.20q) = %v, want %v", s, got, want)
		}
	}
}
