// SPDX-License-Identifier: Apache-2.0

package childerr

import (
	"errors"
	"testing"
)

func TestFrom(t *testing.T) {
	exit := errors.New("exit status 1")
	for _, tt := range []struct{ stderr, want string }{
		{"northstarctl: rotate lifecycle secret: open lock: permission denied\n", "rotate lifecycle secret: open lock: permission denied"},
		// An older northstarctl that does not know the flag prints its
		// usage first: the error is its last line.
		{"Usage: northstarctl agent [--config PATH]\n\nFlags:\n  -config string\n    \tconfig file\nnorthstarctl: usage: flag provided but not defined: -rotate-lifecycle\n",
			"usage: flag provided but not defined: -rotate-lifecycle"},
		{"panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:9 +0x25\nexit status 2\n", "panic: boom"},
		{"no program name here: it stays\n", "no program name here: it stays"},
		{"", "exit status 1"},
		{"  \n", "exit status 1"},
	} {
		if got := From(tt.stderr, exit); got.Error() != tt.want {
			t.Errorf("From(%q) = %q, want %q", tt.stderr, got, tt.want)
		}
	}
}
