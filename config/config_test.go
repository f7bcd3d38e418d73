// SPDX-License-Identifier: Apache-2.0

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/replay"
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
		`state_dir = "relative"`:                                         "absolute",
		`sealer = "aws"`:                                                 "sealer",
		`statedir = "/x"`:                                                "unknown key",
		"[tpm]\npcrs = [24]":                                             "out of range",
		"[tpm]\npcrs = [7, 7]":                                           "twice",
		"[secret]\nmode = \"0600\"":                                      "bits other than read",
		"[secret]\ndir = \"/etc\"":                                       "only /run/northstar",
		"[rotation]\non = \"sometimes\"":                                 "rotation",
		`sealer = `:                                                      "line",
		"sealer = \"tpm\"\n[tpm]\npath = \"\"":                           "[tpm] path is empty",
		"[agent]\nsocket = \"agent.sock\"":                               "absolute",
		"[agent]\nsocket = \"/run/a/../b\"":                              "absolute",
		"[agent]\nsocket = \"/agent.sock\"":                              "directory of its own",
		"[agent]\nsocket = \"/" + strings.Repeat("a", 110) + "/s\"":      "longer than",
		"[agent]\nsockett = \"/run/a/s\"":                                "unknown key",
		"[shim]\ndelegate = \"\"":                                        "[shim] delegate",
		"[audit]\nmax_bytes = 1000":                                      "[audit] max_bytes",
		"[audit]\nmax_bytes = 2147483648":                                "[audit] max_bytes",
		"[audit]\nkeep = 0":                                              "[audit] keep",
		"[audit]\nkeep = 1001":                                           "[audit] keep",
		"[audit]\nmax_byte = 100000":                                     "unknown key",
		"[shim]\ndelegate = \"bin/shim\"":                                "[shim] delegate",
		"[shim]\ndelegate = \"/usr/bin/../bin/x\"":                       "[shim] delegate",
		"[runtime]\ndelegate = \"\"":                                     "[runtime] delegate",
		"[runtime]\ndelegate = \"bin/runc\"":                             "[runtime] delegate",
		apiOn + "[spiffe]\ntrust_domain = \"Example.org\"":               "[spiffe] trust_domain",
		apiOn + "[spiffe]\ntrust_domain = \"spiffe://example.org\"":      "[spiffe] trust_domain",
		apiOn + "[spiffe]\ntrust_domain = \"example.org/a\"":             "[spiffe] trust_domain",
		"[spiffe]\ntrust_domain = \"example.org\"":                       "set [api] enable = true",
		apiOn + "[spiffe]\nissuer = \"spire\"":                           "issuer = \"spire\" needs trust_domain",
		apiOn + "[spiffe]\ntrust_domain = \"e.org\"\nissuer = \"vault\"": "[spiffe] issuer \"vault\"",
		apiOn + "[spiffe]\ntrust_domain = \"e.org\"\nissuer = \"spire\"\n[spire]\nadmin_socket = \"run/admin.sock\"": "[spire] admin_socket",
		"[spiffe]\nx509_svid_ttl = \"4m\"":            "[spiffe] x509_svid_ttl",
		"[spiffe]\nx509_svid_ttl = \"25h\"":           "[spiffe] x509_svid_ttl",
		"[spiffe]\nx509_svid_ttl = \"soon\"":          "[spiffe] x509_svid_ttl",
		"[spiffe]\njwt_svid_ttl = \"10s\"":            "[spiffe] jwt_svid_ttl",
		"[spiffe]\njwt_svid_ttl = \"2h\"":             "[spiffe] jwt_svid_ttl",
		"[spiffe]\ntrustdomain = \"example.org\"":     "unknown key",
		"[spiffe]\nroot = \"disk\"":                   "[spiffe] root",
		"sealer = \"host\"\n[spiffe]\nroot = \"tpm\"": "needs the TPM: set sealer = \"tpm\"",
		"[spiffe]\nca_ttl = \"90m\"":                  "[spiffe] ca_ttl \"90m\": want a duration from twice x509_svid_ttl (2h0m0s)",
		"[spiffe]\nca_ttl = \"721h\"":                 "[spiffe] ca_ttl",
		"[nri]\nenable = true":                        "needs the agent",
		"[nri]\nsocket = \"nri.sock\"":                "[nri] socket",
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

func TestRuntimeDelegate(t *testing.T) {
	d, err := Parse(nil)
	if err != nil || d.Runtime.Delegate != "runc" {
		t.Fatalf("default delegate %q, %v", d.Runtime.Delegate, err)
	}
	for _, ok := range []string{"crun", "/usr/sbin/runc"} {
		c, err := Parse([]byte("[runtime]\ndelegate = \"" + ok + "\"\n"))
		if err != nil || c.Runtime.Delegate != ok {
			t.Errorf("delegate %q: %+v, %v", ok, c.Runtime, err)
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

// TestTPMLockIsNotInTheStateDir: the TPM lock lives where the TPM does, so
// that a read-only state directory (an immutable OS image) does not stop
// container starts (DESIGN.md §11).
func TestTPMLockIsNotInTheStateDir(t *testing.T) {
	for path, want := range map[string]string{
		"unix:/run/swtpm/sock": "/run/swtpm/sock.lock",
		"tcp:127.0.0.1:2321":   "/run/northstar-tpm.lock",
		"/dev/tpmrm0":          "/run/northstar-tpm.lock",
	} {
		c := Default()
		c.TPM.Path = path
		t.Setenv("XDG_RUNTIME_DIR", "")
		if got := c.TPMLockPath(); got != want && !(Rootless() && want == "/run/northstar-tpm.lock") {
			t.Errorf("[tpm] path %s: lock %s, want %s", path, got, want)
		}
		if strings.HasPrefix(c.TPMLockPath(), c.StateDir) {
			t.Errorf("[tpm] path %s: the lock is in the state directory", path)
		}
	}
	c, err := Parse([]byte("[tpm]\nlock = \"/run/x/tpm.lock\"\n"))
	if err != nil || c.TPMLockPath() != "/run/x/tpm.lock" {
		t.Errorf("[tpm] lock: %v, %v", c, err)
	}
	if _, err := Parse([]byte("[tpm]\nlock = \"relative\"\n")); err == nil {
		t.Error("a relative [tpm] lock accepted")
	}
}

// TestAPIDefaultsAreTheAgents: [api]'s defaults are those of the packages
// that enforce them.
func TestAPIDefaultsAreTheAgents(t *testing.T) {
	d := Default().API
	if d.MaxConnections != api.DefaultConns || d.Rate != api.DefaultRate || d.Burst != api.DefaultBurst ||
		d.RequestTimeout != api.DefaultTimeout.String() || d.MaxUsedTokens != replay.DefaultPerAudience || d.MaxUsedTokensPerSender != replay.DefaultPerSender {
		t.Errorf("[api] defaults %+v differ from the agent's", d)
	}
	for _, bad := range []string{"max_connections = 0", "rate = 0", "burst = 0", `request_timeout = "1ms"`, "max_used_tokens = 0",
		"max_used_tokens = 100\nmax_used_tokens_per_sender = 101"} {
		if _, err := Parse([]byte("[api]\n" + bad + "\n")); err == nil {
			t.Errorf("[api] %s accepted", bad)
		}
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

// apiOn is the config a [spiffe] trust domain needs.
const apiOn = "[agent]\nsocket = \"/run/northstar-agent/agent.sock\"\n[api]\nenable = true\n"

func TestSPIFFE(t *testing.T) {
	d, err := Parse(nil)
	if err != nil || d.SPIFFE.TrustDomain != "" || d.X509SVIDTTL() != time.Hour || d.JWTSVIDTTL() != 5*time.Minute {
		t.Fatalf("default [spiffe]: %+v, %v; want off, 1h and 5m", d.SPIFFE, err)
	}
	c, err := Parse([]byte(apiOn + "[spiffe]\ntrust_domain = \"prod.example-1_a.org\"\nx509_svid_ttl = \"5m\"\njwt_svid_ttl = \"1h\"\n"))
	if err != nil || c.SPIFFE.TrustDomain != "prod.example-1_a.org" || c.X509SVIDTTL() != 5*time.Minute || c.JWTSVIDTTL() != time.Hour {
		t.Fatalf("[spiffe] at its bounds: %+v, %v", c.SPIFFE, err)
	}
}

// TestValidTrustDomainMatchesGoSPIFFE: every byte, alone and around the
// length bound, is judged as go-spiffe judges a bare trust domain name.
func TestValidTrustDomainMatchesGoSPIFFE(t *testing.T) {
	goSPIFFE := func(s string) bool {
		// go-spiffe also takes "spiffe://td"; a config names the domain.
		_, err := spiffeid.TrustDomainFromString(s)
		return err == nil && !strings.Contains(s, ":")
	}
	for c := 0; c < 256; c++ {
		for _, n := range []int{1, 2, 255} {
			s := strings.Repeat("a", n-1) + string([]byte{byte(c)})
			if got, want := ValidTrustDomain(s), goSPIFFE(s); got != want {
				t.Errorf("ValidTrustDomain(%d bytes ending in %#x) = %v, go-spiffe says %v", n, c, got, want)
			}
		}
	}
	for _, s := range []string{"", strings.Repeat("a", 256)} {
		if ValidTrustDomain(s) {
			t.Errorf("ValidTrustDomain(%d bytes) = true", len(s))
		}
	}
}
