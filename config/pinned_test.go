// SPDX-License-Identifier: Apache-2.0

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPinned: the agent serves a start (the agent hook's, the shim's)
// only for a config given as the file it loaded (by any path), unchanged
// since; another file, or the file changed, is the asker's to decide.
func TestPinned(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	body := "sealer = \"host\"\n[agent]\nsocket = \"/run/a/agent.sock\"\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	p, err := Pin(path, &log)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{path, link} {
		if err := p.Check(q, "the hook"); err != nil {
			t.Errorf("Check(%s) = %v, want the agent's own file served", q, err)
		}
	}
	copied := filepath.Join(dir, "copy.toml")
	if err := os.WriteFile(copied, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Check(copied, "the shim"); err == nil || !strings.Contains(err.Error(), "the shim's config "+copied+" is not the agent's") {
			t.Errorf("Check of a copy = %v, want it refused", err)
		}
	}
	// Logged once while it repeats: the agent's log says why the starts
	// take the slow way.
	if want := "agent: not serving the starts of the shim: the shim's config " + copied + " is not the agent's (" + path + ")\n"; log.String() != want {
		t.Errorf("logged %q, want %q", log.String(), want)
	}
	// Changed since the agent started: a later modification time.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(path, "the hook"); err == nil || !strings.Contains(err.Error(), "changed since the agent started") {
		t.Errorf("Check of the changed file = %v, want it refused", err)
	}
	// Without a config file the agent serves no start.
	none, err := Pin("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := none.Check(path, "the hook"); err == nil {
		t.Error("an agent without a config file served a start")
	}
}
