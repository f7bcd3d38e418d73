// SPDX-License-Identifier: Apache-2.0

package rootfsid

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOfDirectory(t *testing.T) {
	dir := t.TempDir()
	id, err := Of(dir, "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(id, " dev=") || !strings.HasSuffix(id, " ino="+strconv.FormatUint(st.Ino, 10)) {
		t.Fatalf("Of(%s) = %q", dir, id)
	}
}

// TestOfOverlay: an overlay's identity is its lower layers.
func TestOfOverlay(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("mounting an overlay needs root, and CI runs as root")
		}
		t.Skip("mounting an overlay needs root")
	}
	dir := t.TempDir()
	for _, d := range []string{"l1", "l2", "up", "work", "mnt"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lower := filepath.Join(dir, "l1") + ":" + filepath.Join(dir, "l2")
	if err := unix.Mount("overlay", filepath.Join(dir, "mnt"), "overlay", 0,
		"lowerdir="+lower+",upperdir="+filepath.Join(dir, "up")+",workdir="+filepath.Join(dir, "work")); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(dir, "mnt"), unix.MNT_DETACH)
	id, err := Of(filepath.Join(dir, "mnt"), "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if id != "overlay lowerdir="+lower {
		t.Fatalf("Of(overlay) = %q, want lowerdir=%s", id, lower)
	}
}
