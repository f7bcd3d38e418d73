// SPDX-License-Identifier: Apache-2.0

package peek_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/config/peek"
)

// TestAgentSocketAsConfig: for every way TOML can say [agent] socket (and
// files that do not), AgentSocket finds what config.Parse decodes.
func TestAgentSocketAsConfig(t *testing.T) {
	for name, doc := range map[string]string{
		"table":                    "[agent]\nsocket = \"/run/a/agent.sock\"\n",
		"table, other keys around": "state_dir = \"/var/lib/x\"\n[tpm]\npath = \"/dev/tpmrm0\"\n[agent]\n# the agent\nsocket = '/run/a/agent.sock'\n[api]\nenable = true\n",
		"dotted key":               "agent.socket = \"/run/a/agent.sock\"\n",
		"quoted dotted key":        "\"agent\".'socket' = \"/run/a/agent.sock\"\n",
		"inline table":             "agent = { socket = \"/run/a/agent.sock\" }\n",
		"escapes":                  "[agent]\nsocket = \"/run/a\\u0062/agent.sock\"\n",
		"none":                     "state_dir = \"/var/lib/x\"\n",
		"empty":                    "",
		"socket of another table":  "[nri]\nsocket = \"/run/nri.sock\"\n[agent]\n",
		"shipped":                  mustRead(t, "../../packaging/deb/config.toml"),
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		want, err := config.Load(path)
		if err != nil {
			t.Fatalf("%s: config.Load: %v", name, err)
		}
		got, err := peek.AgentSocket(path)
		if err != nil || got != want.Agent.Socket {
			t.Errorf("%s: AgentSocket = %q, %v; config.Load decodes %q", name, got, err, want.Agent.Socket)
		}
	}
}

func TestAgentSocketRefuses(t *testing.T) {
	for name, doc := range map[string]string{
		"not TOML":          "[agent\nsocket = \"/x\"\n",
		"not a string":      "[agent]\nsocket = 3\n",
		"inline, not a str": "agent = { socket = true }\n",
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := peek.AgentSocket(path); err == nil {
			t.Errorf("%s: AgentSocket = %q, want an error", name, got)
		}
	}
	if _, err := peek.AgentSocket(filepath.Join(t.TempDir(), "none.toml")); err == nil {
		t.Error("AgentSocket of a missing file: no error")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
