// SPDX-License-Identifier: Apache-2.0

package secretfs

import (
	"strings"
	"testing"
)

// The hook's in-memory phase, for `make bench`; the mount phases are in
// package mount.

func BenchmarkNewSealedMemfd(b *testing.B) {
	content := []byte(strings.Repeat("ab", 32))
	for b.Loop() {
		f, err := NewSealedMemfd("bench", content)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
