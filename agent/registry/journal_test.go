// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	// The journal stays open across folds: the next registration is its
	// one line, from the start of the emptied file.
	r2, _, err := register(t, c, "db", "db", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(filepath.Join(c.dir, journal))
	if err != nil {
		t.Fatal(err)
	}
	var e Entry
	if bytes.Count(data, []byte("\n")) != 1 || json.Unmarshal(data, &e) != nil || e.Registration != r2 {
		t.Errorf("the journal after the fold and one registration: %q; want its one line", data)
	}
}

// TestSweepForgetsStalePreparations: a container prepared (NRI) and never
// started is forgotten after preparedTTL, with its directory; a fresh one
// stays.
func TestSweepForgetsStalePreparations(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(context.Background(), options(hostStore(t, dir), dir), gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.Prepare("stale", "stale", nil, nil, true); err != nil {
		t.Fatal(err)
	}
	_, fresh, err := c.Prepare("fresh", "fresh", nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.prepared["stale"].at = time.Now().Add(-preparedTTL - time.Second)
	staleDir := c.prepared["stale"].dir
	c.mu.Unlock()
	c.sweepPrepared()
	c.mu.Lock()
	_, staleLeft := c.prepared["stale"]
	_, freshLeft := c.prepared["fresh"]
	n := len(c.byKey)
	c.mu.Unlock()
	if staleLeft || !freshLeft || n != 1 {
		t.Errorf("after the sweep: stale %v, fresh %v, %d listed; want only the fresh one", staleLeft, freshLeft, n)
	}
	if _, err := os.Stat(staleDir); !os.IsNotExist(err) {
		t.Errorf("the stale one's directory: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("the fresh one's directory: %v", err)
	}
	if bound, err := c.Bind("stale", os.Getpid()); bound || err != nil {
		t.Errorf("Bind of a forgotten container: %v, %v; want not prepared", bound, err)
	}
}

// TestJournalRecordsGone: a container gone is one journal line, not a
// rewrite of registry.json; status and a restarted agent no longer list
// it, and a long journal is folded by the next removal.
func TestJournalRecordsGone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := options(hostStore(t, dir), dir)
	c, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	web, _, err := register(t, c, "web", "web", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := register(t, c, "db", "db", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(c.dir, saved))
	if err != nil {
		t.Fatal(err)
	}
	c.gone(web, false)
	if after, err := os.ReadFile(filepath.Join(c.dir, saved)); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("registry.json was rewritten for a removal: %s (%v)", after, err)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, journal))
	if err != nil {
		t.Fatal(err)
	}
	if lines := bytes.Split(bytes.TrimSpace(data), []byte("\n")); len(lines) != 3 || !bytes.HasPrefix(lines[2], []byte(`{"gone":`)) {
		t.Fatalf("the journal after two registrations and a removal: %q", data)
	}
	if s, err := readSaved(c.dir); err != nil || len(s.Containers) != 1 || s.Containers[0].Registration != db {
		t.Fatalf("what status reads after the removal: %+v, %v; want db alone", s, err)
	}
	c.Close()
	c, err = Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.mu.Lock()
	_, hasWeb := c.byKey[web]
	_, hasDB := c.byKey[db]
	c.mu.Unlock()
	if hasWeb || !hasDB {
		t.Fatalf("the restarted agent lists web %v, db %v; want db alone", hasWeb, hasDB)
	}
	// A long journal: the next removal folds it.
	c.saveMu.Lock()
	c.journalLines = maxJournalLines
	c.saveMu.Unlock()
	c.gone(db, false)
	if fi, err := os.Stat(filepath.Join(c.dir, journal)); err != nil || fi.Size() != 0 {
		t.Errorf("the journal after a removal that folds it: %v, %v; want empty", fi, err)
	}
	if s, err := readSaved(c.dir); err != nil || len(s.Containers) != 0 {
		t.Errorf("registry.json after the fold: %+v, %v; want no container", s, err)
	}
}
