// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestNew(t *testing.T) {
	h := New("/usr/local/bin/northstar-hook", "/etc/northstar/config.toml")
	if h.Path != "/usr/local/bin/northstar-hook" || !slices.Equal(h.Args, []string{Name, "--config", "/etc/northstar/config.toml"}) {
		t.Errorf("entry %+v", h)
	}
	if h.Timeout == nil || *h.Timeout != Timeout {
		t.Errorf("timeout %v, want %d", h.Timeout, Timeout)
	}
	// The environment is explicit and holds nothing a runtime passed in.
	if len(h.Env) != 1 || !strings.HasPrefix(h.Env[0], "PATH=") {
		t.Errorf("env %q, want PATH only", h.Env)
	}
	// Entries do not share their slices: editing one leaves the next alone.
	h.Env[0] = "LD_PRELOAD=/x.so"
	if New("/h", "/c").Env[0] != env[0] {
		t.Error("New returned a shared env slice")
	}
}

func TestIsNorthstar(t *testing.T) {
	for path, want := range map[string]bool{
		"/usr/local/bin/northstar-hook":   true,
		"northstar-hook":                  true,
		"/opt/x/northstar-hook":           true,
		"/usr/bin/nvidia-container-hook":  false,
		"/usr/local/bin/northstar-hook.1": false,
		"/northstar-hook/other":           false,
	} {
		if got := IsNorthstar(specs.Hook{Path: path}); got != want {
			t.Errorf("IsNorthstar(%q) = %v, want %v", path, got, want)
		}
	}
}
