// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/entry"
)

// wrapperWorld is an installed northstar-runtime (built from this tree)
// with a northstar-hook beside it, a host-sealer config, and a delegate
// runtime that records how it was run instead of running anything.
type wrapperWorld struct {
	dir, bin, config, record, bundle string
}

func newWrapperWorld(t *testing.T, delegate string) *wrapperWorld {
	t.Helper()
	dir := t.TempDir()
	w := &wrapperWorld{dir: dir, bin: filepath.Join(dir, "bin", Name), config: filepath.Join(dir, "config.toml"),
		record: filepath.Join(dir, "record"), bundle: filepath.Join(dir, "bundle")}
	if err := os.MkdirAll(filepath.Dir(w.bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.bin, builtWrapper(t), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", entry.Name), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The recording runtime: argv, cwd and one variable, one per line.
	script := fmt.Sprintf("#!/bin/sh\n{ printf '%%s\\n' \"$0\" \"$@\"; pwd; echo \"MARK=$MARK\"; } > %s\n", w.record)
	if err := os.WriteFile(filepath.Join(dir, "bin", "runc"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if delegate == "" {
		delegate = filepath.Join(dir, "bin", "runc")
	}
	toml := fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[runtime]\ndelegate = %q\n", filepath.Join(dir, "state"), delegate)
	if err := os.WriteFile(w.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(w.bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	w.writeSpec(t, mustRead(t, "../hook/entry/testdata/containerd-1.6-image.json"))
	return w
}

var build struct {
	once sync.Once
	bin  []byte
	err  error
}

// builtWrapper is cmd/northstar-runtime built from this tree, once.
func builtWrapper(t *testing.T) []byte {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "runcwrap-build-")
		if err != nil {
			build.err = err
			return
		}
		defer os.RemoveAll(dir)
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, Name), "../cmd/northstar-runtime").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("build: %v\n%s", err, out)
			return
		}
		build.bin, build.err = os.ReadFile(filepath.Join(dir, Name))
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (w *wrapperWorld) writeSpec(t *testing.T, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(w.bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type runResult struct {
	stdout, stderr string
	err            error
}

// run runs the wrapper as an engine would, from dir, with env added.
func (w *wrapperWorld) run(t *testing.T, dir string, env []string, args ...string) runResult {
	t.Helper()
	_ = os.Remove(w.record)
	cmd := exec.Command(w.bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + filepath.Join(w.dir, "bin") + ":/usr/bin:/bin", "NORTHSTAR_CONFIG=" + w.config, "MARK=engine's"}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return runResult{stdout.String(), stderr.String(), err}
}

// recorded returns what the delegate was run with, nil if it was not run.
func (w *wrapperWorld) recorded(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(w.record)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (w *wrapperWorld) spec(t *testing.T) specs.Spec {
	t.Helper()
	var s specs.Spec
	if err := json.Unmarshal(mustRead(t, filepath.Join(w.bundle, "config.json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWrapperCreate: create adds the hook to the bundle --bundle names,
// then becomes the delegate with the same arguments, environment and
// working directory, printing nothing.
func TestWrapperCreate(t *testing.T) {
	w := newWrapperWorld(t, "")
	args := []string{"--root", "/run/r", "--log", filepath.Join(w.dir, "log.json"), "--log-format", "json", "create", "--bundle", w.bundle, "--pid-file", "/run/p", "c1"}
	r := w.run(t, w.dir, nil, args...)
	if r.err != nil || r.stdout != "" || r.stderr != "" {
		t.Fatalf("create: %v\nstdout: %q\nstderr: %q", r.err, r.stdout, r.stderr)
	}
	want := append(append([]string{filepath.Join(w.dir, "bin", "runc")}, args...), w.dir, "MARK=engine's")
	if got := w.recorded(t); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("delegate ran with\n%q\nwant\n%q", got, want)
	}
	s := w.spec(t)
	if s.Hooks == nil || len(s.Hooks.CreateRuntime) != 1 || s.Hooks.CreateRuntime[0].Path != filepath.Join(w.dir, "bin", entry.Name) ||
		strings.Join(s.Hooks.CreateRuntime[0].Args, " ") != entry.Name+" --config "+w.config {
		t.Errorf("hooks after create: %+v", s.Hooks)
	}
	// Twice: the same file (idempotent, not rewritten).
	fi, _ := os.Stat(filepath.Join(w.bundle, "config.json"))
	if r := w.run(t, w.dir, nil, args...); r.err != nil {
		t.Fatalf("second create: %v %s", r.err, r.stderr)
	}
	if fi2, _ := os.Stat(filepath.Join(w.bundle, "config.json")); !os.SameFile(fi, fi2) {
		t.Error("a config.json that has the hook was rewritten")
	}
}

// TestWrapperBundleIsTheWorkingDirectory: without --bundle, runc reads
// config.json in its working directory, and so does the wrapper; run
// prepares as create does.
func TestWrapperBundleIsTheWorkingDirectory(t *testing.T) {
	w := newWrapperWorld(t, "")
	if r := w.run(t, w.bundle, nil, "run", "-d", "c1"); r.err != nil || r.stderr != "" {
		t.Fatalf("run: %v %s", r.err, r.stderr)
	}
	if s := w.spec(t); s.Hooks == nil || len(s.Hooks.CreateRuntime) != 1 {
		t.Errorf("hooks after run: %+v", s.Hooks)
	}
	if got := w.recorded(t); len(got) < 2 || got[len(got)-2] != w.bundle {
		t.Errorf("delegate ran in %q", got)
	}
}

// TestWrapperPassesOtherCommands: every other command goes straight to
// the delegate, even with no config at all (runc on PATH then), and the
// bundle is not touched.
func TestWrapperPassesOtherCommands(t *testing.T) {
	w := newWrapperWorld(t, "")
	before := mustRead(t, filepath.Join(w.bundle, "config.json"))
	for _, args := range [][]string{{"--root", "/r", "start", "c1"}, {"delete", "--force", "c1"}, {"state", "c1"}, {"--version"}, {"create", "--help"}} {
		r := w.run(t, w.bundle, []string{"NORTHSTAR_CONFIG=" + filepath.Join(w.dir, "missing.toml")}, args...)
		if r.err != nil || r.stdout != "" || r.stderr != "" {
			t.Errorf("%q: %v %q %q", args, r.err, r.stdout, r.stderr)
		}
		if got := w.recorded(t); len(got) != len(args)+3 || strings.Join(got[1:len(args)+1], " ") != strings.Join(args, " ") {
			t.Errorf("%q: delegate ran with %q", args, got)
		}
	}
	if after := mustRead(t, filepath.Join(w.bundle, "config.json")); !bytes.Equal(before, after) {
		t.Error("a command other than create changed config.json")
	}
}

// TestWrapperFailsClosed: a hostile or broken config.json, a missing
// config, an unknown flag: the delegate is not run, the wrapper prints one
// line naming itself and the cause, and writes it into runc's log as runc
// would (the engine shows it from there).
func TestWrapperFailsClosed(t *testing.T) {
	tests := []struct {
		name string
		spec []byte // nil: the default spec
		env  []string
		args []string
		want string
	}{
		{name: "not JSON", spec: []byte("{\"hooks\": "), want: "inject hook: config.json is not an OCI spec"},
		{name: "an array", spec: []byte("[]"), want: "config.json is not an OCI spec"},
		{name: "hooks of the wrong type", spec: []byte(`{"ociVersion":"1.0.2","hooks":"/bin/sh"}`), want: "config.json is not an OCI spec: hooks"},
		{name: "data after the object", spec: []byte(`{"ociVersion":"1.0.2"} {"hooks":{}}`), want: "data after the object"},
		{name: "larger than the cap", spec: bytes.Repeat([]byte(" "), entry.MaxBundleConfigSize+1), want: "larger than"},
		{name: "no config", env: []string{"NORTHSTAR_CONFIG=/nonexistent/config.toml"}, want: "config /nonexistent/config.toml does not exist"},
		{name: "relative config", env: []string{"NORTHSTAR_CONFIG=config.toml"}, want: "is not an absolute path"},
		{name: "unknown flag", args: []string{"create", "--config", "/x.json", "c1"}, want: `create: unknown flag "--config"`},
		{name: "no bundle", args: []string{"create", "-b", "/nonexistent/bundle", "c1"}, want: "inject hook: open bundle config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWrapperWorld(t, "")
			if tt.spec != nil {
				w.writeSpec(t, tt.spec)
			}
			args := tt.args
			if args == nil {
				args = []string{"create", "--bundle", w.bundle, "c1"}
			}
			log := filepath.Join(w.dir, "log.json")
			r := w.run(t, w.dir, tt.env, append([]string{"--log", log, "--log-format", "json"}, args...)...)
			if r.err == nil || w.recorded(t) != nil {
				t.Fatalf("the delegate ran: %v %q", r.err, w.recorded(t))
			}
			line := strings.TrimSuffix(r.stderr, "\n")
			if r.stdout != "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, Name+": ") || !strings.Contains(line, tt.want) {
				t.Errorf("stdout %q, stderr %q; want one line with %q", r.stdout, r.stderr, tt.want)
			}
			var rec struct{ Level, Msg string }
			if err := json.Unmarshal(mustRead(t, log), &rec); err != nil || rec.Level != "error" || rec.Msg != line {
				t.Errorf("runc log %q (%v); want the error %q", mustRead(t, log), err, line)
			}
		})
	}
}

// TestWrapperNeverExecsItself: a delegate that is the wrapper would loop.
func TestWrapperNeverExecsItself(t *testing.T) {
	w := newWrapperWorld(t, "")
	toml := fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[runtime]\ndelegate = %q\n", filepath.Join(w.dir, "state"), w.bin)
	if err := os.WriteFile(w.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	r := w.run(t, w.dir, nil, "state", "c1")
	if r.err == nil || !strings.Contains(r.stderr, "is this wrapper itself") {
		t.Errorf("delegate = the wrapper: %v %q", r.err, r.stderr)
	}
}

// TestWrapperLogText: with runc's default log format, the error is a
// logrus text line.
func TestWrapperLogText(t *testing.T) {
	w := newWrapperWorld(t, "")
	w.writeSpec(t, []byte("nope"))
	log := filepath.Join(w.dir, "log")
	if r := w.run(t, w.dir, nil, "--log", log, "create", "-b", w.bundle, "c1"); r.err == nil {
		t.Fatal("create of a broken spec succeeded")
	}
	if got := string(mustRead(t, log)); !strings.Contains(got, "level=error msg=\"northstar-runtime: inject hook: ") {
		t.Errorf("text log: %q", got)
	}
}

// TestWrapperSetsTheSPIFFEEndpoint: with [spiffe] trust_domain, a container
// that gets the API finds its Workload API in its environment, as the
// shim sets it.
func TestWrapperSetsTheSPIFFEEndpoint(t *testing.T) {
	w := newWrapperWorld(t, "")
	toml := fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[runtime]\ndelegate = %q\n[agent]\nsocket = \"/run/a/agent.sock\"\n[api]\nenable = true\n[spiffe]\ntrust_domain = \"example.org\"\n",
		filepath.Join(w.dir, "state"), filepath.Join(w.dir, "bin", "runc"))
	if err := os.WriteFile(w.config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := w.run(t, w.dir, nil, "create", "-b", w.bundle, "c1"); r.err != nil {
		t.Fatalf("create: %v %s", r.err, r.stderr)
	}
	if env := w.spec(t).Process.Env; !slices.Contains(env, entry.EnvSPIFFEEndpoint+"="+entry.SPIFFEEndpoint) {
		t.Errorf("the container's environment: %q", env)
	}
}

// TestWrapperSearchesTheSystemPathWithoutPATH: podman runs `delete` with
// no PATH at all; the wrapper must still find runc where execvp would,
// or the container's state is left behind (TestPodmanRuntimeWrapper
// checks that none is).
func TestWrapperSearchesTheSystemPathWithoutPATH(t *testing.T) {
	t.Setenv("PATH", "")
	if got := searchPath(); got != defaultPath {
		t.Errorf("empty PATH: searched %q, want %q", got, defaultPath)
	}
	t.Setenv("PATH", "/opt/x:/bin")
	if got := searchPath(); got != "/opt/x:/bin" {
		t.Errorf("PATH=/opt/x:/bin: searched %q", got)
	}
}
