// SPDX-License-Identifier: Apache-2.0

package peercred

import "testing"

func TestAllowUID(t *testing.T) {
	for _, c := range []struct {
		peer, self uint32
		ok         bool
	}{{0, 0, true}, {0, 1000, true}, {1000, 1000, true}, {1001, 1000, false}, {65534, 0, false}, {1000, 0, false}} {
		if err := AllowUID(c.peer, c.self); (err == nil) != c.ok {
			t.Errorf("AllowUID(%d, %d) = %v, want ok=%v", c.peer, c.self, err, c.ok)
		}
	}
}
