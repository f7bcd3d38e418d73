package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/audit"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`
state_dir = "/var/lib/ns"
sealer = "tpm"
[tpm]
path = "unix:/run/swtpm/sock"
pcrs = [7, 16]
[secret]
dir = "/run/northstar"
mode = "0440"
[rotation]
on = "manual"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/ns" || c.TPM.Path != "unix:/run/swtpm/sock" || len(c.TPM.PCRs) != 2 || c.SecretMode() != 0o440 || c.Rotation.On != RotateManual {
		t.Errorf("parsed %+v", c)
	}
	d, err := Parse(nil)
	if err != nil || d.Sealer != SealerTPM || d.SecretMode() != 0o400 || d.Rotation.On != RotateOnRuntimeRestart || d.TPMTimeout() != 10*time.Second {
		t.Errorf("defaults: %+v, %v", d, err)
	}
	if l := d.Audit; l.MaxBytes != audit.DefaultMaxBytes || l.Keep != audit.DefaultKeep {
		t.Errorf("default [audit]: %+v, want audit's defaults, %d bytes and %d files", l, audit.DefaultMaxBytes, audit.DefaultKeep)
	}
	a, err := Parse([]byte("[audit]\nmax_bytes = 65536\nkeep = 1\n"))
	if err != nil || a.Audit.MaxBytes != 65536 || a.Audit.Keep != 1 {
		t.Errorf("[audit] at its lower bounds: %+v, %v", a.Audit, err)
	}
}

func TestParseRejects(t *testing.T) {
	for in, want := range map[string]string{
		`state_dir = "relative"`:                                    "absolute",
		`sealer = "aws"`:                                            "sealer",
		`statedir = "/x"`:                                           "unknown key",
		"[tpm]\npcrs = [24]":                                        "out of range",
		"[tpm]\npcrs = [7, 7]":                                      "twice",
		"[secret]\nmode = \"0600\"":                                 "bits other than read",
		"[secret]\ndir = \"/etc\"":                                  "only /run/northstar",
		"[rotation]\non = \"sometimes\"":                            "rotation",
		`sealer = `:                                                 "line",
		"sealer = \"tpm\"\n[tpm]\npath = \"\"":                      "[tpm] path is empty",
		"[agent]\nsocket = \"agent.sock\"":                          "absolute",
		"[agent]\nsocket = \"/run/a/../b\"":                         "absolute",
		"[agent]\nsocket = \"/agent.sock\"":                         "directory of its own",
		"[agent]\nsocket = \"/" + strings.Repeat("a", 110) + "/s\"": "longer than",
		"[agent]\nsockett = \"/run/a/s\"":                           "unknown key",
		"[shim]\ndelegate = \"\"":                                   "[shim] delegate",
		"[audit]\nmax_bytes = 1000":                                 "[audit] max_bytes",
		"[audit]\nmax_bytes = 2147483648":                           "[audit] max_bytes",
		"[audit]\nkeep = 0":                                         "[audit] keep",
		"[audit]\nkeep = 1001":                                      "[audit] keep",
		"[audit]\nmax_byte = 100000":                                "unknown key",
		"[shim]\ndelegate = \"bin/shim\"":                           "[shim] delegate",
		"[shim]\ndelegate = \"/usr/bin/../bin/x\"":                  "[shim] delegate",
		"[nri]\nenable = true":                                      "needs the agent",
		"[nri]\nsocket = \"nri.sock\"":                              "[nri] socket",
	} {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

func TestLoadNamesMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Load(missing) = %v, want an error naming the path", err)
	}
	if err := os.WriteFile(p, []byte(strings.Repeat("#", maxConfigSize+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil {
		t.Error("oversized config accepted")
	}
}

func TestDiscover(t *testing.T) {
	t.Setenv(EnvConfig, "/from/env.toml")
	if got := Discover("/flag.toml"); got != "/flag.toml" {
		t.Errorf("flag: %s", got)
	}
	if got := Discover(""); got != "/from/env.toml" {
		t.Errorf("env: %s", got)
	}
	t.Setenv("XDG_CONFIG_HOME", "/home/u/.cfg")
	if got := DefaultPathFor(true); got != "/home/u/.cfg/northstar/config.toml" {
		t.Errorf("rootless default: %s", got)
	}
	if got := DefaultPathFor(false); got != DefaultPath {
		t.Errorf("rootful default: %s", got)
	}
}

func TestShimDelegate(t *testing.T) {
	d, err := Parse(nil)
	if err != nil || d.Shim.Delegate != "containerd-shim-runc-v2" {
		t.Fatalf("default delegate %q, %v", d.Shim.Delegate, err)
	}
	for _, ok := range []string{"containerd-shim-runc-v2", "/opt/bin/containerd-shim-runc-v2"} {
		c, err := Parse([]byte("[shim]\ndelegate = \"" + ok + "\"\n"))
		if err != nil || c.Shim.Delegate != ok {
			t.Errorf("delegate %q: %+v, %v", ok, c.Shim, err)
		}
	}
}

func TestAgentSocket(t *testing.T) {
	d, err := Parse(nil)
	if err != nil || d.Agent.Socket != "" {
		t.Fatalf("the agent must be off by default: %+v, %v", d.Agent, err)
	}
	c, err := Parse([]byte("[agent]\nsocket = \"/run/northstar-agent/agent.sock\"\n"))
	if err != nil || c.Agent.Socket != "/run/northstar-agent/agent.sock" {
		t.Errorf("parsed %+v, %v", c.Agent, err)
	}
}

func TestNRI(t *testing.T) {
	d, err := Parse(nil)
	if err != nil || d.NRI.Enable || d.NRI.Socket != DefaultNRISocket {
		t.Fatalf("the plugin must be off by default, at containerd's socket: %+v, %v", d.NRI, err)
	}
	c, err := Parse([]byte("[agent]\nsocket = \"/run/a/a.sock\"\n[nri]\nenable = true\nsocket = \"/run/x/nri.sock\"\n"))
	if err != nil || !c.NRI.Enable || c.NRI.Socket != "/run/x/nri.sock" {
		t.Errorf("parsed %+v, %v", c.NRI, err)
	}
}
