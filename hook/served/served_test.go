// SPDX-License-Identifier: Apache-2.0

package served

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/config"
)

// TestServesOnlyItsOwnConfig: the agent serves a start only for a hook
// given the file it loaded (the same file by any path), unchanged since;
// another file, or the file changed, is the hook's to decide.
func TestServesOnlyItsOwnConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	body := "sealer = \"host\"\n[agent]\nsocket = \"/run/a/agent.sock\"\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := New(nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*starts)
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, link} {
		if err := s.sameConfig(p); err != nil {
			t.Errorf("sameConfig(%s) = %v, want the agent's own file served", p, err)
		}
	}
	copied := filepath.Join(dir, "copy.toml")
	if err := os.WriteFile(copied, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.sameConfig(copied); err == nil || !strings.Contains(err.Error(), "is not the agent's") {
		t.Errorf("sameConfig of a copy = %v, want it refused", err)
	}
	// Changed since the agent started: a later modification time.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if err := s.sameConfig(path); err == nil || !strings.Contains(err.Error(), "changed since the agent started") {
		t.Errorf("sameConfig of the changed file = %v, want it refused", err)
	}
	// Without a config file the agent serves no start.
	none, err := New(nil, nil, config.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := none.(*starts).sameConfig(path); err == nil {
		t.Error("an agent without a config file served a start")
	}
}
