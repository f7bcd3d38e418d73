// SPDX-License-Identifier: Apache-2.0

package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/seal"
)

func newHostStore(t *testing.T) *Store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	return New(dir, seal.NewHost(filepath.Join(dir, seal.HostKeyFile)))
}

func TestInitIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	// The remedy ("run 'northstarctl init'") is the front ends' (package remedy).
	if _, _, err := s.Secret(ctx); !errors.Is(err, ErrNotInitialized) || !strings.Contains(err.Error(), s.Dir()) {
		t.Fatalf("before init: err = %v, want ErrNotInitialized naming the state dir", err)
	}
	rec, created, err := s.Init(ctx, "")
	if err != nil || !created || rec.Generation != 1 {
		t.Fatalf("Init = %+v, %v, %v", rec, created, err)
	}
	sec1, _, err := s.Secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec2, created, err := s.Init(ctx, "")
	if err != nil || created || rec2.Generation != 1 {
		t.Fatalf("second Init = %+v, %v, %v", rec2, created, err)
	}
	sec2, _, _ := s.Secret(ctx)
	if !sec1.Equal(sec2) {
		t.Error("second Init changed the secret")
	}
	fi, err := os.Stat(s.Dir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode())
	}
}

func TestRotateChangesSecretAndGeneration(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	old, _, _ := s.Secret(ctx)
	rec, err := s.Rotate(ctx)
	if err != nil || rec.Generation != 2 {
		t.Fatalf("Rotate = %+v, %v", rec, err)
	}
	cur, got, err := s.Secret(ctx)
	if err != nil || got.Generation != 2 {
		t.Fatalf("Secret after rotate: %+v, %v", got, err)
	}
	if cur.Equal(old) {
		t.Error("rotation kept the secret")
	}
}

func TestStateHoldsNoPlaintext(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	sec, _, _ := s.Secret(ctx)
	raw := sec.Bytes()
	hx := []byte(hex.EncodeToString(raw))
	ents, _ := os.ReadDir(s.Dir())
	for _, e := range ents {
		data, _ := os.ReadFile(filepath.Join(s.Dir(), e.Name()))
		if bytes.Contains(data, raw) || bytes.Contains(data, hx) || bytes.Contains(bytes.ToUpper(data), bytes.ToUpper(hx)) {
			t.Errorf("%s contains the secret", e.Name())
		}
	}
}

// TestRotateIfLifecycleChangedOnce races many rotators with the same new
// lifecycle id: exactly one rotation must happen.
func TestRotateIfLifecycleChangedOnce(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, "boot-a"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	rotations := 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A separate Store per goroutine: its own lock fd, as separate
			// shim processes would have.
			s2 := New(s.Dir(), seal.NewHost(filepath.Join(s.Dir(), seal.HostKeyFile)))
			_, change, err := s2.RotateIfLifecycleChanged(ctx, "boot-b")
			if err != nil {
				t.Error(err)
			}
			if change == Rotated {
				mu.Lock()
				rotations++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rec, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	if rotations != 1 || rec.Generation != 2 || rec.LifecycleID != "boot-b" {
		t.Errorf("rotations = %d, record %+v; want exactly one rotation to generation 2", rotations, rec)
	}
	if _, change, _ := s.RotateIfLifecycleChanged(ctx, "boot-b"); change != Unchanged {
		t.Error("same lifecycle rotated again")
	}
}

// TestLifecycleAdoptionAndManualRotation: the secret init made is adopted by
// the first runtime lifecycle instead of being replaced at once, and a
// manual rotation keeps the lifecycle, so the runtime's next start does
// not rotate a second time (issue 9, point 7: generation 3 -> 4).
func TestLifecycleAdoptionAndManualRotation(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	before, _, err := s.Secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec, change, err := s.RotateIfLifecycleChanged(ctx, "boot-a")
	if err != nil || change != Adopted || rec.Generation != 1 || rec.LifecycleID != "boot-a" {
		t.Fatalf("first start after init: %+v, change %d, %v; want generation 1 adopted by boot-a", rec, change, err)
	}
	after, _, err := s.Secret(ctx)
	if err != nil || !after.Equal(before) {
		t.Fatalf("adoption changed the secret (%v)", err)
	}
	rec, err = s.Rotate(ctx)
	if err != nil || rec.Generation != 2 || rec.LifecycleID != "boot-a" {
		t.Fatalf("manual rotate: %+v, %v; want generation 2 keeping lifecycle boot-a", rec, err)
	}
	if rec, change, err := s.RotateIfLifecycleChanged(ctx, "boot-a"); err != nil || change != Unchanged || rec.Generation != 2 {
		t.Errorf("start after a manual rotate: %+v, change %d, %v; want generation 2 unchanged", rec, change, err)
	}
	if rec, change, err := s.RotateIfLifecycleChanged(ctx, "boot-b"); err != nil || change != Rotated || rec.Generation != 3 {
		t.Errorf("runtime restart: %+v, change %d, %v; want a rotation to generation 3", rec, change, err)
	}
}

func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), RecordFile)
	good, _ := os.ReadFile(path)
	for name, data := range map[string][]byte{
		"truncated":      good[:len(good)/2],
		"empty":          {},
		"future format":  bytes.Replace(good, []byte(`"format": 3`), []byte(`"format": 7`), 1),
		"unknown field":  bytes.Replace(good, []byte(`"format": 3`), []byte(`"format": 3, "plaintext": "x"`), 1),
		"zero generaton": bytes.Replace(good, []byte(`"generation": 1`), []byte(`"generation": 0`), 1),
		"oversized":      append(bytes.Clone(good), bytes.Repeat([]byte(" "), maxRecordSize)...),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.Secret(ctx)
		if !errors.Is(err, seal.ErrCorrupt) && !errors.Is(err, seal.ErrUnknownVersion) {
			t.Errorf("%s: err = %v, want ErrCorrupt or ErrUnknownVersion", name, err)
		}
	}
	// Rotation is the way out of a corrupt record, and it continues the
	// count: generation 1 names the first secret for the state dir's life.
	if rec, err := s.Rotate(ctx); err != nil || rec.Generation != 2 {
		t.Fatalf("rotate over a corrupt record: %+v, %v; want generation 2, not 1 again", rec, err)
	}
	if _, _, err := s.Secret(ctx); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"format":1,"generation":1,"lifecycle_id":"","created":"2026-01-01T00:00:00Z","sealer":"host","blob":"TlNIAQ=="}`))
	f.Add([]byte(`{"format":1,"generation":2,"lifecycle_id":"","created":"2026-01-01T00:00:00Z","sealer":"host","blob":"TlNIAQ==","audit_head":{"lines":7,"hash":"00"}}`))
	f.Add([]byte(`{"format":2,"generation":2,"lifecycle_id":"","created":"2026-01-01T00:00:00Z","sealer":"host","blob":"TlNIAQ==","audit_head":{"lines":7,"hash":"00"}}`))
	f.Add([]byte(`{"format":3}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := DecodeRecord(data)
		if err == nil && (rec.Format < oldestFormat || rec.Format > FormatVersion || rec.Generation == 0 || len(rec.Blob) == 0) {
			t.Fatalf("accepted invalid record %+v", rec)
		}
	})
}

func TestKeysSurviveRotations(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	k1, err := s.Key(ctx, "root", 32)
	if err != nil || len(k1) != 32 {
		t.Fatalf("Key: %x, %v", k1, err)
	}
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	k2, err := s.Key(ctx, "root", 32)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("the key changed with a rotation (%v)", err)
	}
	other, _ := s.Key(ctx, "audit", 32)
	if bytes.Equal(other, k1) {
		t.Error("two key names share a key")
	}
	data, _ := os.ReadFile(filepath.Join(s.Dir(), "root.key.json"))
	if bytes.Contains(data, k1) || bytes.Contains(data, []byte(fmt.Sprintf("%x", k1))) {
		t.Error("the key file holds the key in clear")
	}
}

// appendAudit appends n lines to the audit log in s's state directory, as
// the agent would, and returns the log's head.
func appendAudit(t *testing.T, s *Store, n int) audit.Head {
	t.Helper()
	return appendAuditWith(t, s, n, audit.Limits{}, nil)
}

// appendAuditWith is appendAudit with the log's limits and recorded head.
func appendAuditWith(t *testing.T, s *Store, n int, lim audit.Limits, want *audit.Head) audit.Head {
	t.Helper()
	w, err := audit.Open(filepath.Join(s.Dir(), audit.FileName), bytes.Repeat([]byte{7}, 32), lim, want)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := w.Append("token-issued", map[string]string{"token_id": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	h := w.Head()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return h
}

func headOf(t *testing.T, s *Store) *audit.Head {
	t.Helper()
	rec, err := s.Current() // read back: the head survives the record file
	if err != nil {
		t.Fatal(err)
	}
	return rec.AuditHead
}

func TestRotationRecordsTheAuditHead(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	// No agent ever ran: no head, and no field in the record.
	if h := headOf(t, s); h != nil {
		t.Fatalf("head %+v without a log", h)
	}
	data, _ := os.ReadFile(filepath.Join(s.Dir(), RecordFile))
	if bytes.Contains(data, []byte("audit_head")) {
		t.Error("a record without a head names the field (older binaries reject it)")
	}

	h1 := appendAudit(t, s, 5)
	rec, err := s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rec.AuditHead == nil || *rec.AuditHead != h1 || *headOf(t, s) != h1 {
		t.Fatalf("rotation recorded %+v, want the log's head %+v", rec.AuditHead, h1)
	}

	// Adoption is not a rotation: the head stays the one recorded then.
	h2 := appendAudit(t, s, 3)
	if _, change, err := s.RotateIfLifecycleChanged(ctx, "boot-a"); err != nil || change != Adopted {
		t.Fatalf("adoption: change %d, %v", change, err)
	}
	if h := headOf(t, s); h == nil || *h != h1 {
		t.Fatalf("adoption changed the head to %+v, want %+v", h, h1)
	}
	// A runtime restart rotates and records the log's head now.
	if _, change, err := s.RotateIfLifecycleChanged(ctx, "boot-b"); err != nil || change != Rotated {
		t.Fatalf("runtime restart: change %d, %v", change, err)
	}
	if h := headOf(t, s); h == nil || *h != h2 {
		t.Fatalf("runtime restart recorded %+v, want %+v", h, h2)
	}
	// So does a reprovision (not pinned to the old key, same log).
	h3 := appendAudit(t, s, 1)
	if _, err := s.Reprovision(ctx); err != nil {
		t.Fatal(err)
	}
	if h := headOf(t, s); h == nil || *h != h3 {
		t.Fatalf("reprovision recorded %+v, want %+v", h, h3)
	}
}

func TestRotationNeverLowersTheAuditHead(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	h := appendAudit(t, s, 6)
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	// Cut the log, then rotate again: recording the shorter log's head
	// would hide the cut.
	log := filepath.Join(s.Dir(), audit.FileName)
	data, _ := os.ReadFile(log)
	lines := strings.SplitAfter(string(data), "\n")
	if err := os.WriteFile(log, []byte(strings.Join(lines[:3], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, s); got == nil || *got != h {
		t.Fatalf("after a cut, rotation recorded %+v, want the old head %+v", got, h)
	}
	// Cut and written on past the head (what an agent that does not check
	// the head would do): the line where the head was is another one now,
	// and rotation must not bless the new branch.
	appendAudit(t, s, 10)
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, s); got == nil || *got != h {
		t.Fatalf("after a cut written on past the head, rotation recorded %+v, want the old head %+v", got, h)
	}
	// A log that is no log keeps the head too, and does not stop rotation.
	if err := os.WriteFile(log, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatalf("rotation failed on a bad audit log: %v", err)
	}
	if got := headOf(t, s); got == nil || *got != h {
		t.Fatalf("with a bad log, rotation recorded %+v, want %+v", got, h)
	}
}

// TestResetAudit: reset moves the log aside as evidence and forgets the
// head, so a new log can start; a rotation then records the new log's.
func TestResetAudit(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	old := appendAudit(t, s, 4)
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	moved, err := s.ResetAudit(ctx)
	if err != nil || moved == "" {
		t.Fatalf("ResetAudit = %q, %v", moved, err)
	}
	if data, err := os.ReadFile(filepath.Join(moved, audit.FileName)); err != nil || strings.Count(string(data), "\n") != int(old.Lines) {
		t.Fatalf("the old log is not kept in %s: %v", moved, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), audit.FileName)); !os.IsNotExist(err) {
		t.Fatalf("the log is still in place: %v", err)
	}
	if got := headOf(t, s); got != nil {
		t.Fatalf("the record keeps head %+v after a reset", got)
	}
	h := appendAudit(t, s, 2)
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, s); got == nil || *got != h {
		t.Fatalf("after a reset, rotation recorded %+v, want the new log's %+v", got, h)
	}
}

// TestFormat1RecordsAreRead: records written before audit_head existed
// (format 1) are read, and written back in the format of today.
func TestFormat1RecordsAreRead(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), RecordFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Replace(data, []byte(`"format": 3`), []byte(`"format": 1`), 1)
	if bytes.Equal(old, data) || os.WriteFile(path, old, 0o600) != nil {
		t.Fatal("could not write a format 1 record")
	}
	sec, rec, err := s.Secret(ctx)
	if err != nil || rec.Format != 1 {
		t.Fatalf("format 1 record: %+v, %v", rec, err)
	}
	sec.Zero()
	if rec, _, err = s.RotateIfLifecycleChanged(ctx, "lc-1"); err != nil || rec.Format != FormatVersion {
		t.Fatalf("adopted record: %+v, %v; want format %d", rec, err, FormatVersion)
	}
}

// TestAuditHeadFollowsPruning: once the log's own rotation prunes the line
// of the recorded head, the next rotation still records the new head (the
// old one cannot be checked, and pruning is by design), or the head would
// stop moving for good.
func TestAuditHeadFollowsPruning(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(s.Dir(), audit.FileName)
	small := audit.Limits{MaxBytes: 1024, Keep: 1}
	write := func(n int, want *audit.Head) audit.Head { return appendAuditWith(t, s, n, small, want) }
	h1 := write(3, nil)
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, s); got == nil || *got != h1 {
		t.Fatalf("first head %+v, want %+v", got, h1)
	}
	h2 := write(60, &h1) // many files' worth: line h1.Lines is pruned
	if _, err := audit.LineHash(log, h1.Lines); !errors.Is(err, audit.ErrPruned) {
		t.Fatalf("LineHash of the first head = %v, want ErrPruned (the test needs it pruned)", err)
	}
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := headOf(t, s); got == nil || *got != h2 {
		t.Fatalf("after pruning, rotation recorded %+v, want %+v", got, h2)
	}
}

// TestRevocationsAreNeverForgotten: a full record of the longest ids
// still loads, and a revocation past maxRevocations is refused rather than
// made by forgetting the oldest (which would lift it without the admin).
func TestRevocationsAreNeverForgotten(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	if _, _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	id := func(i int) string { return fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 249)) }
	var ids []string
	for i := 0; i < maxRevocations; i++ {
		ids = append(ids, id(i))
	}
	if _, err := s.Rotate(ctx, ids...); err != nil {
		t.Fatalf("%d revocations of %d-byte ids: %v", maxRevocations, len(ids[0]), err)
	}
	if _, err := s.Rotate(ctx, "one-too-many"); !errors.Is(err, ErrTooManyRevocations) || !strings.Contains(err.Error(), "northstarctl revoke --lift") {
		t.Fatalf("revocation %d: %v, want ErrTooManyRevocations naming the lift", maxRevocations+1, err)
	}
	rec, err := s.Current()
	if err != nil {
		t.Fatalf("the full record does not load: %v", err)
	}
	if rec.RevokedID(id(0)) == nil || rec.RevokedID("one-too-many") != nil {
		t.Errorf("after the refused revocation: oldest revoked %v, refused one revoked %v", rec.RevokedID(id(0)) != nil, rec.RevokedID("one-too-many") != nil)
	}
	if _, err := s.Lift(ctx, id(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(ctx, "one-too-many"); err != nil {
		t.Fatalf("after a lift: %v", err)
	}
}
