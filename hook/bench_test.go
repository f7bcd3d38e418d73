// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"os"
	"path/filepath"
	"testing"
)

func BenchmarkParseState(b *testing.B) {
	state := []byte(`{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/run/containerd/io.containerd.runtime.v2.task/default/c1","annotations":{"io.northstar.secret.mode":"0440"}}`)
	for b.Loop() {
		if _, err := ParseState(state); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadSpec reads a containerd-sized config.json.
func BenchmarkLoadSpec(b *testing.B) {
	dir := b.TempDir()
	data, err := os.ReadFile("entry/testdata/containerd-1.6-image.json")
	if err != nil {
		b.Skip("no containerd spec in hook/entry/testdata")
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := LoadSpec(dir); err != nil {
			b.Fatal(err)
		}
	}
}
