// SPDX-License-Identifier: Apache-2.0

package mount

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/secretfs"
)

// The hook's mount phases, for `make bench`: which step of a container start
// costs what.

func BenchmarkNew(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	memfd, err := secretfs.NewSealedMemfd("bench", []byte(strings.Repeat("ab", 32)))
	if err != nil {
		b.Fatal(err)
	}
	defer memfd.Close()
	for b.Loop() {
		m, err := New(memfd, Owner{UID: 1000, GID: 1000, Mode: 0o400})
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

// BenchmarkAttachInRoot: resolve /run/northstar in a rootfs and move the
// mount there, in a private mount namespace, as the hook does per start.
func BenchmarkAttachInRoot(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	memfd, err := secretfs.NewSealedMemfd("bench", []byte(strings.Repeat("ab", 32)))
	if err != nil {
		b.Fatal(err)
	}
	defer memfd.Close()
	dir := b.TempDir()
	// One rootfs per iteration, made before the clock starts.
	for i := 0; i < b.N; i++ {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprint(i), "run"), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	err = inPrivateMountNS(func() error {
		for i := 0; i < b.N; i++ {
			rootfs := filepath.Join(dir, fmt.Sprint(i))
			m, err := New(memfd, Owner{Mode: 0o400})
			if err != nil {
				return err
			}
			if err := m.AttachInRoot(rootfs, "/run/northstar", nil); err != nil {
				return err
			}
			m.Close()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
