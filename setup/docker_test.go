// SPDX-License-Identifier: Apache-2.0

package setup

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testRuntime = "/usr/bin/northstar-runtime"

func planDocker(t *testing.T, content string, def bool) (*Docker, *Plan, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "daemon.json")
	if content != "" {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := &Docker{Config: path, Runtime: testRuntime, Default: def}
	p, err := d.Plan()
	return d, p, err
}

// TestDockerNew: no daemon.json yet: one with the runtime alone.
func TestDockerNew(t *testing.T) {
	d, p, err := planDocker(t, "", false)
	if err != nil || len(p.Changes) != 1 {
		t.Fatalf("plan: %+v, %v", p, err)
	}
	want := "{\n  \"runtimes\": {\n    \"northstar\": {\n      \"path\": \"/usr/bin/northstar-runtime\"\n    }\n  }\n}\n"
	if got := string(p.Changes[0].New); got != want {
		t.Errorf("new daemon.json:\n%s\nwant:\n%s", got, want)
	}
	if p.Changes[0].Old != nil || p.Changes[0].Mode != 0o644 {
		t.Errorf("change: %+v", p.Changes[0])
	}
	if _, err := Apply(p.Changes, time.Now()); err != nil {
		t.Fatal(err)
	}
	p2, err := d.Plan()
	if err != nil || len(p2.Changes) != 0 {
		t.Errorf("second plan: %+v, %v; want nothing to do", p2, err)
	}
}

// TestDockerMerge: every other key keeps its value and place, other
// runtimes stay, a stale northstar entry is replaced, --default sets
// default-runtime; applying twice changes nothing; the file is backed up.
func TestDockerMerge(t *testing.T) {
	in := `{
	"log-driver": "journald",
	"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": ["--x"]}, "northstar": {"path": "/old/northstar-runtime"}},
	"default-runtime": "nvidia",
	"storage-opts": ["a", "b"], "max-concurrent-downloads": 3, "debug": true, "big": 12345678901234567890
}`
	d, p, err := planDocker(t, in, true)
	if err != nil || len(p.Changes) != 1 {
		t.Fatalf("plan: %+v, %v", p, err)
	}
	out := string(p.Changes[0].New)
	order := []string{`"log-driver": "journald"`, `"nvidia": {`, `"--x"`, `"northstar": {`, `"path": "/usr/bin/northstar-runtime"`, `"default-runtime": "northstar"`, `"storage-opts"`, `"max-concurrent-downloads": 3`, `"debug": true`, `"big": 12345678901234567890`}
	at := 0
	for _, s := range order {
		i := strings.Index(out[at:], s)
		if i < 0 {
			t.Fatalf("%s missing or out of place in\n%s", s, out)
		}
		at += i
	}
	if strings.Contains(out, "/old/") {
		t.Errorf("stale path kept:\n%s", out)
	}
	backups, err := Apply(p.Changes, time.Now())
	if err != nil || len(backups) != 1 {
		t.Fatalf("apply: %v, %v", backups, err)
	}
	if b, _ := os.ReadFile(backups[0]); string(b) != in {
		t.Errorf("backup holds %q", b)
	}
	if fi, _ := os.Stat(d.Config); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the file's own 0600 kept", fi.Mode().Perm())
	}
	if p2, err := d.Plan(); err != nil || len(p2.Changes) != 0 {
		t.Errorf("second plan: %+v, %v", p2, err)
	}
	// Without --default, a default already set to northstar stays.
	d.Default = false
	if p3, err := d.Plan(); err != nil || len(p3.Changes) != 0 {
		t.Errorf("plan without --default: %+v, %v", p3, err)
	}
}

// TestDockerWithoutDefault: another default runtime stays the default.
func TestDockerWithoutDefault(t *testing.T) {
	_, p, err := planDocker(t, `{"default-runtime": "runc"}`, false)
	if err != nil || len(p.Changes) != 1 {
		t.Fatalf("plan: %+v, %v", p, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(p.Changes[0].New, &doc); err != nil || doc["default-runtime"] != "runc" {
		t.Errorf("default-runtime changed: %s", p.Changes[0].New)
	}
}

// TestDockerRefusesBrokenFiles: setup edits nothing it cannot read, and
// says which line is wrong.
func TestDockerRefusesBrokenFiles(t *testing.T) {
	for _, tt := range []struct {
		name, content, want string
	}{
		{"syntax error on line 3", "{\n  \"debug\": true,\n  \"log-level\" \"info\"\n}\n", "line 3: expected colon"},
		{"trailing comma", "{\n  \"debug\": true,\n}\n", "line 3:"},
		{"truncated", "{\n  \"runtimes\": {\n", "line 3: unexpected end"},
		{"an array", "[]", "line 1: not a JSON object"},
		{"two objects", "{}\n{}", "line 2: data after the object"},
		{"a key twice", "{\"runtimes\": {},\n\"runtimes\": {}}", "line 2: \"runtimes\" appears twice"},
		{"runtimes not an object", `{"runtimes": ["northstar"]}`, "\"runtimes\" is not an object"},
		{"northstar twice in runtimes", `{"runtimes": {"northstar": {}, "northstar": {}}}`, "appears twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, p, err := planDocker(t, tt.content, false)
			var pe *ParseError
			if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "daemon.json") {
				t.Errorf("plan = %+v, %v; want a ParseError with %q", p, err, tt.want)
			}
		})
	}
}

// TestDockerDryRunDescribes: what --dry-run prints names the file and the
// lines it adds.
func TestDockerDryRunDescribes(t *testing.T) {
	_, p, err := planDocker(t, "{\"debug\": true}\n", true)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	p.Changes[0].Describe(&b)
	if s := b.String(); !strings.Contains(s, "edit ") || !strings.Contains(s, `+     "northstar": {`) || !strings.Contains(s, `+   "default-runtime": "northstar"`) {
		t.Errorf("describe:\n%s", s)
	}
}
