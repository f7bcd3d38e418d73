// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// TestSetupDocker: --dry-run changes nothing, a run adds the runtime (and
// with --default makes it the default) keeping the rest, a second run
// changes nothing, and a broken daemon.json is refused naming its line.
func TestSetupDocker(t *testing.T) {
	cfgPath := newConfig(t)
	daemon := filepath.Join(t.TempDir(), "daemon.json")
	in := "{\n  \"log-level\": \"warn\"\n}\n"
	if err := os.WriteFile(daemon, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := ctl(t, "setup", "docker", "--config", cfgPath, "--daemon-json", daemon, "--default", "--dry-run")
	if err != nil || !strings.Contains(out, "edit "+daemon) || !strings.Contains(out, `"default-runtime": "northstar"`) || !strings.Contains(out, "dry run: nothing was changed") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(daemon); string(b) != in {
		t.Fatalf("dry run changed daemon.json:\n%s", b)
	}
	out, _, _ = ctl(t, "setup", "docker", "--config", cfgPath, "--daemon-json", daemon, "--default")
	b, _ := os.ReadFile(daemon)
	if !strings.Contains(out, "wrote "+daemon) || !strings.Contains(out, "backed up ") || !strings.Contains(string(b), `"log-level": "warn"`) ||
		!strings.Contains(string(b), `"default-runtime": "northstar"`) || !strings.Contains(string(b), runtimeBinary+`"`) {
		t.Fatalf("setup docker:\n%s\ndaemon.json:\n%s", out, b)
	}
	if !strings.Contains(out, "NORTHSTAR_CONFIG="+cfgPath) {
		t.Errorf("setup with a config off the default path does not say dockerd needs NORTHSTAR_CONFIG:\n%s", out)
	}
	out, _, _ = ctl(t, "setup", "docker", "--config", cfgPath, "--daemon-json", daemon, "--default")
	if !strings.Contains(out, "docker: wired already, nothing changed") {
		t.Errorf("second setup:\n%s", out)
	}
	if b2, _ := os.ReadFile(daemon); string(b2) != string(b) {
		t.Errorf("second setup changed daemon.json")
	}

	broken := filepath.Join(t.TempDir(), "daemon.json")
	if err := os.WriteFile(broken, []byte("{\n  \"debug\": true,\n  \"runtimes\": {\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = ctl(t, "setup", "docker", "--config", cfgPath, "--daemon-json", broken)
	if err == nil || !strings.Contains(err.Error(), broken+": line 5: ") || !strings.Contains(err.Error(), "--daemon-json") {
		t.Errorf("broken daemon.json: %v", err)
	}
}

// TestConfigCRIO: the CRI-O drop-in is TOML naming the runtime, runtime
// type "oci", and the config when it is off the default path.
func TestConfigCRIO(t *testing.T) {
	cfgPath := newConfig(t)
	out, notes, err := ctl(t, "config", "crio", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		CRIO struct {
			Runtime struct {
				Default  string `toml:"default_runtime"`
				Runtimes map[string]struct {
					Path       string   `toml:"runtime_path"`
					Type       string   `toml:"runtime_type"`
					MonitorEnv []string `toml:"monitor_env"`
				} `toml:"runtimes"`
			} `toml:"runtime"`
		} `toml:"crio"`
	}
	if err := toml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not TOML: %v\n%s", err, out)
	}
	rt := doc.CRIO.Runtime.Runtimes["northstar"]
	if doc.CRIO.Runtime.Default != "northstar" || !strings.HasSuffix(rt.Path, "/"+runtimeBinary) || rt.Type != "oci" ||
		len(rt.MonitorEnv) != 2 || rt.MonitorEnv[1] != "NORTHSTAR_CONFIG="+cfgPath {
		t.Errorf("drop-in %+v:\n%s", doc, out)
	}
	if !strings.Contains(notes, "Untested") {
		t.Errorf("the notes do not say the drop-in is untested:\n%s", notes)
	}
}
