package registry

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestJournalKeepsRegistrationsAcrossRestart: a registration is answered
// once its line is in registry.journal (registry.json is not rewritten
// for it); status and a restarted agent see it, and the next full save
// folds the journal into registry.json.
func TestJournalKeepsRegistrationsAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := options(hostStore(t, dir), dir)
	c, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	p := sleeper(t)
	r, apiDir, err := register(t, c, "web", "web", p)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, saved))
	if err != nil {
		t.Fatal(err)
	}
	var fromFile Saved
	if err := json.Unmarshal(data, &fromFile); err != nil || len(fromFile.Containers) != 0 {
		t.Fatalf("registry.json was rewritten for the registration: %s (%v)", data, err)
	}
	if s, err := readSaved(c.dir); err != nil || len(s.Containers) != 1 || s.Containers[0].Registration != r {
		t.Fatalf("what status reads: %+v, %v; want the registration", s, err)
	}
	c.Close() // as an agent that stops; a crashed one leaves the same files
	c, err = Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.mu.Lock()
	_, ok := c.byKey[r]
	c.mu.Unlock()
	if !ok {
		t.Fatal("the restarted agent did not take the registration back from the journal")
	}
	if _, err := os.Stat(filepath.Join(apiDir, "api.sock")); err != nil {
		t.Errorf("the restarted agent does not serve its socket: %v", err)
	}
	// Open saved in full (restore): the journal is folded and empty.
	if fi, err := os.Stat(filepath.Join(c.dir, journal)); err != nil || fi.Size() != 0 {
		t.Errorf("the journal after a full save: %v, %v; want empty", fi, err)
	}
	if s, err := readSaved(c.dir); err != nil || len(s.Containers) != 1 {
		t.Errorf("after the fold: %+v, %v", s, err)
	}
}
