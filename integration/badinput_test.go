// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestHookBadInput feeds the real hook binary broken input. Each case must
// exit non-zero with one line "northstar-hook: <what>: <why>" naming the
// cause, and mount nothing.
func TestHookBadInput(t *testing.T) {
	requires(t)
	e := newEnv(t, "", nil)
	okBundle := newBundle(t, e.dir, false, "true")
	okBundle.write(t)

	dirBundle := filepath.Join(e.dir, "config-is-dir")
	_ = os.MkdirAll(filepath.Join(dirBundle, "config.json"), 0o755)
	zeroBundle := filepath.Join(e.dir, "config-is-dev-zero")
	_ = os.MkdirAll(zeroBundle, 0o755)
	_ = os.Symlink("/dev/zero", filepath.Join(zeroBundle, "config.json"))
	noRoot := filepath.Join(e.dir, "config-without-root")
	_ = os.MkdirAll(noRoot, 0o755)
	_ = os.WriteFile(filepath.Join(noRoot, "config.json"), []byte(`{"ociVersion":"1.2.0"}`), 0o644)
	uninit := filepath.Join(e.dir, "uninit.toml")
	_ = os.WriteFile(uninit, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n", filepath.Join(e.dir, "nothing-here"))), 0o644)
	badCfg := filepath.Join(e.dir, "bad.toml")
	_ = os.WriteFile(badCfg, []byte("sealer = \"aws\"\n"), 0o644)

	state := func(bundle string) string {
		return fmt.Sprintf(`{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":%d,"bundle":%q}`, os.Getpid(), bundle)
	}
	tests := []struct {
		name   string
		args   []string
		stdin  string
		status int
		want   string
	}{
		{name: "malformed state", stdin: `{"id":`, status: 1, want: "northstar-hook: read state: state is not OCI state JSON"},
		{name: "empty state", stdin: ``, status: 1, want: "northstar-hook: read state:"},
		{name: "oversized state", stdin: `{"id":"` + strings.Repeat("a", 100<<10) + `"}`, status: 1, want: "northstar-hook: read state: state is larger than"},
		{name: "state without pid", stdin: `{"id":"c1","bundle":"/x"}`, status: 1, want: "northstar-hook: read state: state has no container pid"},
		{name: "missing bundle", stdin: state("/nonexistent/bundle"), status: 1, want: "northstar-hook: read bundle: open bundle config: open /nonexistent/bundle/config.json: no such file or directory"},
		{name: "config.json is a directory", stdin: state(dirBundle), status: 1, want: "northstar-hook: read bundle: read bundle config.json:"},
		{name: "config.json is endless", stdin: state(zeroBundle), status: 1, want: "northstar-hook: read bundle: bundle config.json is larger than"},
		{name: "config.json without root", stdin: state(noRoot), status: 1, want: "northstar-hook: read bundle: bundle config.json has no root.path"},
		{name: "missing config file", args: []string{"--config", "/nonexistent.toml"}, stdin: state(okBundle.dir), status: 1, want: "northstar-hook: load config: config /nonexistent.toml does not exist"},
		{name: "invalid config", args: []string{"--config", badCfg}, stdin: state(okBundle.dir), status: 1, want: `northstar-hook: load config: config ` + badCfg + `: sealer "aws"`},
		{name: "store never initialized", args: []string{"--config", uninit}, stdin: state(okBundle.dir), status: 1, want: "run 'northstarctl init'"},
		{name: "unknown flag", args: []string{"--bogus"}, status: 2, want: "northstar-hook: usage:"},
		{name: "stray argument", args: []string{"--config", e.config, "extra"}, status: 2, want: "northstar-hook: usage: unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts := hostMounts(t)
			args := tt.args
			if args == nil {
				args = []string{"--config", e.config}
			}
			cmd := exec.Command(bins.hook, args...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			r := run(t, cmd)
			code := -1
			if ee, ok := r.err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tt.status {
				t.Errorf("exit status %d, want %d\n%s", code, tt.status, r)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr does not contain %q\n%s", tt.want, r)
			}
			if n := strings.Count(r.stderr, "\n"); n != 1 || r.stdout != "" {
				t.Errorf("want exactly one line on stderr and nothing on stdout\n%s", r)
			}
			if !reflect.DeepEqual(hostMounts(t), mounts) {
				t.Error("the host mount table changed")
			}
		})
	}
}

// TestRuncBadAnnotations: a container with a malformed northstar annotation
// does not start, and runc shows why.
func TestRuncBadAnnotations(t *testing.T) {
	requires(t, "runc")
	e := newEnv(t, "", nil)
	for key, val := range map[string]string{
		"io.northstar.secret.mode":    "0644",
		"io.northstar.secret.uid":     "root",
		"io.northstar.secret.gid":     "-1",
		"io.northstar.secret.disable": "yes",
	} {
		t.Run(key+"="+val, func(t *testing.T) {
			b := newBundle(t, e.dir, false, "echo started").withHook("createRuntime", e.config)
			b.spec.Annotations = map[string]string{key: val}
			r := b.runcRun(t)
			if r.err == nil || strings.Contains(r.stdout, "started") {
				t.Fatalf("container started despite %s=%s:\n%s", key, val, r)
			}
			if !strings.Contains(r.stderr, "northstar-hook: policy: annotation "+key) {
				t.Errorf("runc's error does not name the annotation:\n%s", r)
			}
		})
	}
}
