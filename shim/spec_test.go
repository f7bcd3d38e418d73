// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/atomicfile"
)

// testHook is the hook the bundle tests inject.
var testHook = entry.New("/usr/local/bin/northstar-hook", "/etc/northstar/config.toml")

func TestInjectIntoBundle(t *testing.T) {
	bundle := t.TempDir()
	in, err := os.ReadFile("../hook/entry/testdata/containerd-1.6-rootfs.json")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(bundle, "config.json")
	if err := os.WriteFile(path, in, 0o640); err != nil {
		t.Fatal(err)
	}
	fi0, _ := os.Stat(path)
	changed, err := entry.InjectIntoBundle(bundle, testHook)
	if err != nil || !changed {
		t.Fatalf("injectIntoBundle = %v, %v", changed, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", fi.Mode().Perm())
	}
	if os.SameFile(fi0, fi) {
		t.Error("config.json rewritten in place; want a new file renamed over it")
	}
	ents, _ := os.ReadDir(bundle)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
			t.Errorf("temporary file %s left in the bundle", e.Name())
		}
	}
	changed, err = entry.InjectIntoBundle(bundle, testHook)
	if err != nil || changed {
		t.Errorf("second injectIntoBundle = %v, %v; want no change", changed, err)
	}
	if fi2, _ := os.Stat(path); !os.SameFile(fi, fi2) {
		t.Error("unchanged config.json was rewritten")
	}

	if _, err := entry.InjectIntoBundle(filepath.Join(bundle, "missing"), testHook); err == nil || !strings.Contains(err.Error(), "open bundle config") {
		t.Errorf("missing bundle: err = %v", err)
	}
	big := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), entry.MaxBundleConfigSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := entry.InjectIntoBundle(filepath.Dir(big), testHook); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized config.json: err = %v", err)
	}
}

func TestConfigPath(t *testing.T) {
	t.Setenv("NORTHSTAR_CONFIG", "/etc/x/../northstar/config.toml")
	if got, err := configPath(); err != nil || got != "/etc/northstar/config.toml" {
		t.Errorf("configPath() = %q, %v", got, err)
	}
	t.Setenv("NORTHSTAR_CONFIG", "config.toml")
	if _, err := configPath(); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative NORTHSTAR_CONFIG: err = %v", err)
	}
}

// TestInjectSetsTheSPIFFEEndpoint: with a SPIFFE trust domain the shim
// tells every container that gets the API where its Workload API is;
// without one, nothing.
func TestInjectSetsTheSPIFFEEndpoint(t *testing.T) {
	if env := entry.APIEnv(hostConfig(t, "").SPIFFE.TrustDomain); env != nil {
		t.Errorf("without [spiffe]: %q", env)
	}
	cfg := hostConfig(t, "[agent]\nsocket = \"/run/a/agent.sock\"\n[api]\nenable = true\n[spiffe]\ntrust_domain = \"example.org\"\n")
	env := entry.APIEnv(cfg.SPIFFE.TrustDomain)
	if len(env) != 1 || env[0] != "SPIFFE_ENDPOINT_SOCKET=unix:///run/northstar/api/spiffe.sock" {
		t.Fatalf("with [spiffe]: %q", env)
	}
	bundle := t.TempDir()
	in, err := os.ReadFile("../hook/entry/testdata/containerd-1.6-image.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := entry.InjectIntoBundle(bundle, testHook, env...); err != nil || !changed {
		t.Fatalf("injectIntoBundle = %v, %v", changed, err)
	}
	var spec specs.Spec
	data, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(spec.Process.Env, env[0]) || !slices.Contains(spec.Process.Env, "FOO=bar") {
		t.Errorf("the container's environment: %q", spec.Process.Env)
	}
}
