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
		{"no program name here: it stays\n", "no program name here: it stays"},
		{"", "exit status 1"},
		{"  \n", "exit status 1"},
	} {
		if got := From(tt.stderr, exit); got.Error() != tt.want {
			t.Errorf("From(%q) = %q, want %q", tt.stderr, got, tt.want)
		}
	}
}
