// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/ctl/ctltest"
	"github.com/northstar-oci/northstar/hook/entry"
)

// TestMain doubles as the shim binary: with SHIM_TEST_RUN set, the test
// binary runs the wrapper on its arguments, as containerd would run
// containerd-shim-northstar-v2.
func TestMain(m *testing.M) {
	ctltest.Main() // the shim's rotation child
	if os.Getenv("SHIM_TEST_RUNTIME_PID") == "1" {
		fmt.Println(findRuntime().pid)
		os.Exit(0)
	}
	if os.Getenv("SHIM_TEST_RUN") == "1" {
		err := Run(context.Background(), os.Args[1:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestParseArgs(t *testing.T) {
	wd, _ := os.Getwd()
	tests := []struct {
		args       string
		wantAction string
		wantBundle string
		wantErr    string
	}{
		{"-namespace default -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id c1 start", "start", wd, ""},
		{"-namespace k8s.io -address /a -publish-binary /b -id c1 -debug start", "start", wd, ""},
		{"-namespace=default -id=c1 -bundle=/run/b delete", "delete", "/run/b", ""},
		{"--namespace default --id c1 --bundle /run/b delete", "delete", "/run/b", ""},
		{"-namespace default -id c1 delete", "delete", "", ""},
		{"-v", "", "", ""},
		{"-info", "", "", ""},
		// An id that looks like an action is the flag's value.
		{"-namespace default -id start start", "start", wd, ""},
		{"-namespace default -id delete start", "start", wd, ""},
		{"-namespace default -frob x start", "", "", "unknown flag"},
		{"-namespace default -id", "", "", "needs a value"},
		{"start delete", "", "", "unexpected argument"},
		{"-- start", "", "", "unexpected argument"},
	}
	for _, tt := range tests {
		inv, err := parseArgs(strings.Fields(tt.args))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || inv.action != tt.wantAction || inv.bundle != tt.wantBundle {
			t.Errorf("%q: %+v, %v; want action %q bundle %q", tt.args, inv, err, tt.wantAction, tt.wantBundle)
		}
	}
}

// fakeDelegate is a delegate shim that records what it was run with.
func fakeDelegate(t *testing.T, dir string) (path, record string) {
	t.Helper()
	path = filepath.Join(dir, "containerd-shim-fake-v2")
	record = filepath.Join(dir, "record")
	script := fmt.Sprintf(`#!/bin/sh
{ echo "argv0=$0"; echo "args=$*"; echo "cwd=$(pwd)"; echo "env=$SHIM_TEST_MARK"; echo "stdin=$(cat)"; } > %s
echo /run/containerd/s/fake-address
`, record)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, record
}

// runWrapper runs the test binary as the shim in dir, like containerd.
func runWrapper(t *testing.T, dir, stdin string, env []string, args ...string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"SHIM_TEST_RUN=1", "SHIM_TEST_MARK=from-containerd"}, env...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestStartInjectsHookAndExecsDelegate(t *testing.T) {
	cfg := hostConfig(t, "")
	ctlDir := ctltest.Install(t)
	tmp := t.TempDir()
	delegate, record := fakeDelegate(t, tmp)
	appendConfig(t, cfg.Path, fmt.Sprintf("[shim]\ndelegate = %q\n", delegate))
	// The hook binary the wrapper looks for (next to it, else on PATH).
	hookDir := filepath.Join(tmp, "hookbin")
	os.Mkdir(hookDir, 0o755)
	if err := os.WriteFile(filepath.Join(hookDir, entry.Name), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(tmp, "bundle")
	os.Mkdir(bundle, 0o755)
	in, err := os.ReadFile("../hook/entry/testdata/containerd-1.6-rootfs.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), in, 0o644); err != nil {
		t.Fatal(err)
	}

	args := []string{"-namespace", "default", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "c1", "start"}
	out, err := runWrapper(t, bundle, "opts-from-containerd", []string{"PATH=" + hookDir + ":" + ctlDir + ":/usr/bin:/bin"}, args...)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	if out != "/run/containerd/s/fake-address\n" {
		t.Errorf("containerd would read %q as the shim's output; want only the delegate's address", out)
	}
	got, _ := os.ReadFile(record)
	for _, want := range []string{"argv0=" + delegate, "args=" + strings.Join(args, " "), "cwd=" + bundle, "env=from-containerd", "stdin=opts-from-containerd"} {
		if !strings.Contains(string(got), want+"\n") {
			t.Errorf("delegate ran without %q:\n%s", want, got)
		}
	}
	var spec specs.Spec
	data, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Hooks == nil || len(spec.Hooks.CreateRuntime) != 1 || spec.Hooks.CreateRuntime[0].Path != filepath.Join(hookDir, entry.Name) ||
		spec.Hooks.CreateRuntime[0].Args[2] != cfg.Path {
		t.Errorf("createRuntime hooks after start: %+v", spec.Hooks)
	}
	if gen, _ := generation(t, cfg); gen != 1 {
		t.Errorf("generation %d after the first start, want 1", gen)
	}
}

func TestDeleteDelegatesWithoutConfig(t *testing.T) {
	tmp := t.TempDir()
	_, record := fakeDelegate(t, tmp)
	// No config at all, and the delegate found by its default name on
	// PATH: delete must still reach the runc shim, or containerd leaks.
	if err := os.Rename(filepath.Join(tmp, "containerd-shim-fake-v2"), filepath.Join(tmp, config.DefaultShimDelegate)); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.EnvConfig, filepath.Join(tmp, "missing.toml"))
	args := []string{"-namespace", "default", "-address", "/a", "-publish-binary", "/b", "-id", "c1", "-bundle", tmp, "delete"}
	out, err := runWrapper(t, tmp, "", []string{"PATH=" + tmp + ":/usr/bin:/bin"}, args...)
	if err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(record); !strings.Contains(string(got), "args="+strings.Join(args, " ")+"\n") {
		t.Errorf("delegate record:\n%s", got)
	}
}

func TestStartFailsClosed(t *testing.T) {
	tmp := t.TempDir()
	delegate, record := fakeDelegate(t, tmp)
	ctlDir := ctltest.Install(t)
	tests := []struct {
		name, config, want string
		noCtl              bool
	}{
		{"no config", "", "northstar shim: config " + filepath.Join(tmp, "missing.toml") + " does not exist", false},
		{"delegate missing", fmt.Sprintf("[shim]\ndelegate = %q\n", filepath.Join(tmp, "nope")), "northstar shim: [shim] delegate " + filepath.Join(tmp, "nope") + " is not an executable file", false},
		{"northstarctl missing", fmt.Sprintf("[shim]\ndelegate = %q\n", delegate), "northstar shim: rotate lifecycle secret: northstarctl is neither next to", true},
		{"hook missing", fmt.Sprintf("[shim]\ndelegate = %q\n", delegate), "northstar shim: inject hook: northstar-hook is neither next to", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfgPath := filepath.Join(tmp, "missing.toml")
			if tt.config != "" {
				cfgPath = hostConfig(t, tt.config).Path
			}
			bundle := t.TempDir()
			os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.2","root":{"path":"rootfs"}}`), 0o644)
			path := ctlDir + ":/usr/bin:/bin"
			if tt.noCtl {
				path = "/usr/bin:/bin"
			}
			out, err := runWrapper(t, bundle, "", []string{config.EnvConfig + "=" + cfgPath, "PATH=" + path}, "-namespace", "default", "-id", "c1", "start")
			if err == nil || !strings.HasPrefix(out, tt.want) || strings.Count(out, "\n") != 1 {
				t.Errorf("start = %v, output %q; want one line starting %q", err, out, tt.want)
			}
			if _, err := os.Stat(record); err == nil {
				t.Error("the delegate ran although the start was refused")
			}
		})
	}
}

func TestFindDelegateRefusesItself(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Shim.Delegate = self
	if _, err := findDelegate(cfg, findRuntime().exe); err == nil || !strings.Contains(err.Error(), "this wrapper itself") {
		t.Errorf("findDelegate(self) = %v", err)
	}
	cfg.Shim.Delegate = "containerd-shim-none-such-v2"
	t.Setenv("PATH", t.TempDir())
	if _, err := findDelegate(cfg, findRuntime().exe); err == nil || !strings.Contains(err.Error(), "neither next to containerd nor on PATH") {
		t.Errorf("findDelegate(missing) = %v", err)
	}
}

func appendConfig(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// TestRuntimePidSkipsWrappers: a runtime_path wrapper between containerd
// and the shim does not pass for containerd (issue 9, point 7: it would
// start a new lifecycle, and rotate, at every container start).
func TestRuntimePidSkipsWrappers(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "containerd")
	data, err := os.ReadFile(sh)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fake, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// containerd (a copy of sh) -> sh (the wrapper) -> the shim.
	cmd := exec.Command(fake, "-c", `sh -c '"$0"; true' "$0"; true`, exe)
	cmd.Env = append(os.Environ(), "SHIM_TEST_RUNTIME_PID=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != fmt.Sprint(cmd.Process.Pid) {
		t.Errorf("findRuntime() = %s, want the containerd process %d, not the wrapper", got, cmd.Process.Pid)
	}
	// Without a containerd among its ancestors, the parent is the runtime.
	direct := exec.Command(exe)
	direct.Env = append(os.Environ(), "SHIM_TEST_RUNTIME_PID=1")
	if out, err := direct.Output(); err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("findRuntime() without containerd = %q, %v; want the parent %d", out, err, os.Getpid())
	}
}
