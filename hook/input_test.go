// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/hook/entry"
)

func TestParseState(t *testing.T) {
	good := `{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/run/b"}`
	if st, err := ParseState([]byte(good)); err != nil || st.Pid != 42 || st.Bundle != "/run/b" {
		t.Fatalf("ParseState(good) = %+v, %v", st, err)
	}
	bad := map[string]string{
		"empty":            ``,
		"not json":         `hello`,
		"truncated":        `{"id":"c1","pid":4`,
		"no id":            `{"pid":42,"bundle":"/b"}`,
		"no pid":           `{"id":"c1","bundle":"/b"}`,
		"negative pid":     `{"id":"c1","pid":-1,"bundle":"/b"}`,
		"relative bundle":  `{"id":"c1","pid":42,"bundle":"b"}`,
		"pid as string":    `{"id":"c1","pid":"42","bundle":"/b"}`,
		"oversized":        `{"id":"c1","pid":42,"bundle":"/b","annotations":{"x":"` + strings.Repeat("a", maxStateSize) + `"}}`,
		"array":            `[]`,
		"bundle traversal": `{"id":"c1","pid":42,"bundle":"../../etc"}`,
	}
	for name, in := range bad {
		if _, err := ParseState([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/run/b"}`))
	f.Add([]byte(`{"id":"","pid":0}`))
	f.Add([]byte(`{"id":"x","pid":1,"bundle":"/","annotations":{"io.northstar.secret.mode":"0400"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseState(data)
		if err == nil && (st.ID == "" || st.Pid <= 0 || !filepath.IsAbs(st.Bundle)) {
			t.Fatalf("accepted invalid state %+v", st)
		}
	})
}

func TestLoadSpec(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"ociVersion":"1.2.0","root":{"path":"rootfs"}}`)
	if _, rootfs, err := LoadSpec(dir); err != nil || rootfs != filepath.Join(dir, "rootfs") {
		t.Errorf("relative root: %q, %v", rootfs, err)
	}
	write(`{"ociVersion":"1.2.0","root":{"path":"/abs/rootfs/"}}`)
	if _, rootfs, err := LoadSpec(dir); err != nil || rootfs != "/abs/rootfs" {
		t.Errorf("absolute root: %q, %v", rootfs, err)
	}
	// Which stages run northstar decides what the createRuntime hook does
	// (splitStages): the createContainer hooks must be read.
	for s, want := range map[string]bool{
		`{"root":{"path":"r"}}`: false,
		`{"root":{"path":"r"},"hooks":{"createRuntime":[{"path":"/usr/bin/northstar-hook"}]}}`:                                                                                  false,
		`{"root":{"path":"r"},"hooks":{"createContainer":[{"path":"/usr/bin/other"}]}}`:                                                                                         false,
		`{"root":{"path":"r"},"hooks":{"createRuntime":[{"path":"/usr/bin/northstar-hook"}],"createContainer":[{"path":"/usr/bin/other"},{"path":"/usr/bin/northstar-hook"}]}}`: true,
	} {
		write(s)
		spec, _, err := LoadSpec(dir)
		if err != nil {
			t.Errorf("%s: %v", s, err)
		} else if got := splitStages(spec); got != want {
			t.Errorf("%s: splitStages %v, want %v", s, got, want)
		}
	}
	for name, s := range map[string]string{
		"no root":   `{"ociVersion":"1.2.0"}`,
		"not json":  `{`,
		"oversized": `{"root":{"path":"r"},"annotations":{"x":"` + strings.Repeat("a", entry.MaxBundleConfigSize) + `"}}`,
	} {
		write(s)
		if _, _, err := LoadSpec(dir); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := LoadSpec(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing bundle accepted")
	}
}
