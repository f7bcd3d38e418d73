// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"bufio"
	"strings"
	"testing"
)

func TestMapID(t *testing.T) {
	for _, tc := range []struct {
		name, uidMap string
		id, want     uint32
		err          bool
	}{
		{"the host", "         0          0 4294967295\n", 0, 0, false},
		{"rootless podman's root", "0 1000 1\n1 100000 65536\n", 0, 1000, false},
		{"a subordinate id", "0 1000 1\n1 100000 65536\n", 5, 100004, false},
		{"unmapped", "0 1000 1\n", 7, 0, true},
		{"garbage", "0 x 1\n", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mapID(bufio.NewScanner(strings.NewReader(tc.uidMap)), tc.id)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("mapID(%q, %d) = %d, %v; want %d, error %v", tc.uidMap, tc.id, got, err, tc.want, tc.err)
			}
		})
	}
}
