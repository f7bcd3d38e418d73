// SPDX-License-Identifier: Apache-2.0

// Package store keeps the lifecycle secret at rest: one sealed record in the
// state directory with its generation and the runtime lifecycle it belongs
// to. Readers never lock (the record is replaced by an atomic rename);
// writers hold an exclusive flock so concurrent rotations serialize and a
// "rotate if the lifecycle changed" decision is taken exactly once.
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/capped"
	"github.com/northstar-oci/northstar/internal/flock"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/secretfs"
)

// File names inside the state directory.
const (
	RecordFile = "secret.json"
	LockFile   = "lock"
	// GenerationFile holds the highest generation ever written, so a
	// rotation over a corrupt record continues the count instead of
	// reusing numbers: a generation names one secret for the state
	// directory's life.
	GenerationFile = "generation"
)

// FormatVersion is the record format this code writes. Format 2 added
// audit_head, format 3 revoked; format 1 and 2 records are still read. A binary that
// reads only format 1 takes a format 2 record for one it cannot read, as
// it would a format 1 record with an unknown field: its hook fails closed
// and its shim rotates over it. The version number at least names the
// cause in its error.
const FormatVersion = 3

// oldestFormat is the oldest record format this code reads.
const oldestFormat = 1

// maxRecordSize caps the record file; a TPM blob is well under 1 KiB, and
// maxRevocations ids of 253 bytes take about 75 KiB.
const maxRecordSize = 128 << 10

// Errors a caller must tell apart; front ends add the remedy (package remedy).
var (
	// ErrNotInitialized: the state directory holds no secret yet.
	ErrNotInitialized = errors.New("no lifecycle secret")
	// ErrSealerMismatch: the record was sealed by another sealer than the
	// configured one.
	ErrSealerMismatch = errors.New("the secret was sealed by another sealer than the configured one")
)

// Record is the stored, sealed lifecycle secret and its metadata. It holds
// no plaintext, so it may be printed and marshaled.
type Record struct {
	Format      int       `json:"format"`
	Generation  uint64    `json:"generation"`
	LifecycleID string    `json:"lifecycle_id"`
	Created     time.Time `json:"created"`
	Sealer      string    `json:"sealer"`
	Blob        []byte    `json:"blob"`
	// AuditHead is where the agent's audit log (audit.FileName in the
	// state directory) ended when this record was written: a log cut
	// below it is detected (DESIGN.md §10). Nil when there was no log.
	// New in format 2 (FormatVersion).
	AuditHead *audit.Head `json:"audit_head,omitempty"`
	// Revoked are the containers cut off by this rotation and the ones
	// before it, until lifted (at most maxRevocations): the agent delivers no new
	// secret to them (DESIGN.md §12). New in format 3.
	Revoked []Revocation `json:"revoked,omitempty"`
}

// Revocation names a container cut off by the rotation to Generation: a
// container with that id registered before that generation.
type Revocation struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
}

// maxRevocations bounds the revocations a record carries (each names an
// id of up to 253 bytes, so the record stays under maxRecordSize). A
// revocation past it is refused (ErrTooManyRevocations), never made by
// forgetting an older one.
const maxRevocations = 256

// ErrTooManyRevocations is a revocation refused because maxRevocations
// are in force.
var ErrTooManyRevocations = errors.New("too many revocations")

// Store is the lifecycle secret in a state directory, sealed by a Sealer.
type Store struct {
	dir    string
	sealer seal.Sealer
	now    func() time.Time
}

// New returns the store in dir. Nothing is touched until a method runs.
func New(dir string, s seal.Sealer) *Store {
	return &Store{dir: dir, sealer: s, now: time.Now}
}

// Sealer returns the store's sealer.
func (s *Store) Sealer() seal.Sealer { return s.sealer }

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Current returns the stored record without unsealing it.
func (s *Store) Current() (*Record, error) {
	path := filepath.Join(s.dir, RecordFile)
	data, err := capped.ReadFile(path, maxRecordSize, "record")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, derr := os.Stat(s.dir); derr != nil {
				return nil, fmt.Errorf("%w: state dir %s does not exist", ErrNotInitialized, s.dir)
			}
			return nil, fmt.Errorf("%w in %s", ErrNotInitialized, s.dir)
		}
		if errors.Is(err, capped.ErrTooLarge) {
			// Corrupt, so that rotation can replace it.
			return nil, fmt.Errorf("%s: %w: %w", path, seal.ErrCorrupt, err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rec, err := DecodeRecord(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rec, nil
}

// DecodeRecord parses and checks a record file.
func DecodeRecord(data []byte) (*Record, error) {
	if len(data) > maxRecordSize {
		return nil, fmt.Errorf("%w: record larger than %d bytes", seal.ErrCorrupt, maxRecordSize)
	}
	var probe struct {
		Format *int `json:"format"`
	}
	if err := json.Unmarshal(data, &probe); err != nil || probe.Format == nil {
		return nil, fmt.Errorf("%w: not a northstar record", seal.ErrCorrupt)
	}
	if *probe.Format < oldestFormat || *probe.Format > FormatVersion {
		return nil, fmt.Errorf("%w: record format %d, this northstar reads %d to %d", seal.ErrUnknownVersion, *probe.Format, oldestFormat, FormatVersion)
	}
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("%w: %v", seal.ErrCorrupt, err)
	}
	if rec.Generation == 0 || rec.Sealer == "" || len(rec.Blob) == 0 {
		return nil, fmt.Errorf("%w: record is missing generation, sealer or blob", seal.ErrCorrupt)
	}
	return &rec, nil
}

// Secret unseals the current lifecycle secret. The caller zeroes it.
func (s *Store) Secret(ctx context.Context) (*secretfs.Secret, *Record, error) {
	if _, ok := s.sealer.(readOnly); ok {
		return nil, nil, ErrReadOnly
	}
	rec, err := s.Current()
	if err != nil {
		return nil, nil, err
	}
	if rec.Sealer != s.sealer.Name() {
		return nil, nil, fmt.Errorf("%w (sealed by %q, the config says %q)", ErrSealerMismatch, rec.Sealer, s.sealer.Name())
	}
	pt, err := s.sealer.Unseal(ctx, rec.Blob)
	if err != nil {
		return nil, nil, err
	}
	defer secretfs.Zero(pt)
	sec, err := secretfs.FromBytes(pt)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", seal.ErrCorrupt, err)
	}
	return sec, rec, nil
}

// Init creates the state directory and the first secret. It is a no-op when
// a record exists already; created says which happened.
func (s *Store) Init(ctx context.Context, lifecycleID string) (rec *Record, created bool, err error) {
	err = s.locked(ctx, func() error {
		cur, err := s.Current()
		if err == nil {
			rec = cur
			return nil
		}
		if !errors.Is(err, ErrNotInitialized) {
			return err
		}
		rec, err = s.write(ctx, 1, lifecycleID, nil, nil, nil)
		created = err == nil
		return err
	})
	return rec, created, err
}

// Rotate makes a new secret now, whatever the lifecycle, and keeps the
// record's lifecycle id: a manual rotation starts a new generation, not a
// new runtime lifecycle, so the next container start through the shim
// does not rotate a second time. The new secret is sealed under the key
// of the current one (seal.KeyPinner).
//
// The containers named in revoke (their ids) are cut off by this rotation
// (northstarctl rotate --revoke): the record names them, and the agent
// delivers the new secret to every running container but them, which lose
// theirs instead (DESIGN.md §12).
func (s *Store) Rotate(ctx context.Context, revoke ...string) (*Record, error) {
	return s.rotate(ctx, true, revoke, nil)
}

// Lift is Rotate that lifts the revocations of the containers lift names
// (northstarctl revoke --lift): a revoked id stays revoked, and a
// container with it cannot start, until then. The record changes only by
// a rotation, so that the agent sees the lift as it sees a revocation,
// and audits it. It fails naming the first id no revocation names.
func (s *Store) Lift(ctx context.Context, lift ...string) (*Record, error) {
	return s.rotate(ctx, true, nil, lift)
}

// RevokedID returns the newest revocation of container id the record
// carries, or nil.
func (r *Record) RevokedID(id string) *Revocation {
	var got *Revocation
	for i := range r.Revoked {
		if r.Revoked[i].ID == id && (got == nil || r.Revoked[i].Generation > got.Generation) {
			got = &r.Revoked[i]
		}
	}
	return got
}

// ErrRevoked is a start of a container whose id a rotation revoked.
var ErrRevoked = errors.New("revoked")

// CheckNotRevoked fails, naming the revocation and the command that lifts
// it, when the record revokes container id: a revoked id stays revoked
// (a container restarted under it, as podman's --restart=always does, is
// the container that was cut off).
func (r *Record) CheckNotRevoked(id string) error {
	if rev := r.RevokedID(id); rev != nil {
		return fmt.Errorf("container %s is %w (northstarctl rotate --revoke, generation %d); lift it with 'northstarctl revoke --lift %s'", id, ErrRevoked, rev.Generation, id)
	}
	return nil
}

// Reprovision is Rotate under whatever key the sealer finds now (a TPM
// that was cleared or replaced on purpose): the one way to move the secret
// to another key.
func (s *Store) Reprovision(ctx context.Context) (*Record, error) {
	return s.rotate(ctx, false, nil, nil)
}

func (s *Store) rotate(ctx context.Context, pinned bool, revoke, lift []string) (*Record, error) {
	var rec *Record
	err := s.locked(ctx, func() error {
		gen, cur, err := s.next()
		if err != nil {
			return err
		}
		lifecycleID := ""
		if cur != nil {
			lifecycleID = cur.LifecycleID
		}
		pin := cur
		if !pinned {
			pin = nil
		}
		if len(lift) > 0 {
			if cur, err = lifted(cur, lift); err != nil {
				return err
			}
		}
		rec, err = s.write(ctx, gen, lifecycleID, pin, cur, revoke)
		return err
	})
	return rec, err
}

// lifted is a copy of cur without the revocations of the ids in lift.
func lifted(cur *Record, lift []string) (*Record, error) {
	if cur == nil {
		return nil, fmt.Errorf("no revocation names %s", lift[0])
	}
	out := *cur
	out.Revoked = nil
	drop := map[string]bool{}
	for _, id := range lift {
		if cur.RevokedID(id) == nil {
			return nil, fmt.Errorf("no revocation names %s", id)
		}
		drop[id] = true
	}
	for _, r := range cur.Revoked {
		if !drop[r.ID] {
			out.Revoked = append(out.Revoked, r)
		}
	}
	return &out, nil
}

// Change is what RotateIfLifecycleChanged did.
type Change int

const (
	Unchanged Change = iota // the record already belonged to the lifecycle
	Adopted                 // the record belonged to none; now to this one
	Rotated                 // a new secret for the new lifecycle
)

// RotateIfLifecycleChanged rotates unless the stored record already belongs
// to lifecycleID. A record that belongs to no lifecycle yet (made by init,
// or rotated by hand before any runtime claimed it) is adopted instead: the
// runtime's first start takes the secret the administrator just made.
// Many callers racing with the same id rotate (or adopt) exactly once: the
// check and the write happen under the store lock.
func (s *Store) RotateIfLifecycleChanged(ctx context.Context, lifecycleID string) (rec *Record, change Change, err error) {
	if lifecycleID == "" {
		return nil, Unchanged, errors.New("empty lifecycle id")
	}
	// Fast path without the lock: the common case is "nothing to do".
	if cur, err := s.Current(); err == nil && cur.LifecycleID == lifecycleID {
		return cur, Unchanged, nil
	}
	err = s.locked(ctx, func() error {
		gen, cur, err := s.next()
		if err != nil {
			return err
		}
		switch {
		case cur != nil && cur.LifecycleID == lifecycleID:
			rec = cur
			return nil
		case cur != nil && cur.LifecycleID == "":
			// Not a rotation: the record, its audit head included, stays.
			adopted := *cur
			adopted.LifecycleID = lifecycleID
			if err := s.save(&adopted); err != nil {
				return err
			}
			rec, change = &adopted, Adopted
			return nil
		}
		if rec, err = s.write(ctx, gen, lifecycleID, cur, cur, nil); err != nil {
			return err
		}
		change = Rotated
		return nil
	})
	return rec, change, err
}

// next reads the current record (nil when there is none or it is bad) and
// returns the generation a rotation writes: one above both the record's
// and the highest ever written (GenerationFile). A missing, corrupt or
// newer-format record is no obstacle: rotation is the documented way out
// of a bad record. The caller holds the lock.
func (s *Store) next() (gen uint64, cur *Record, err error) {
	high := s.highWater()
	cur, err = s.Current()
	switch {
	case err == nil:
		return max(cur.Generation, high) + 1, cur, nil
	case errors.Is(err, ErrNotInitialized), errors.Is(err, seal.ErrCorrupt), errors.Is(err, seal.ErrUnknownVersion):
		return high + 1, nil, nil
	default:
		return 0, nil, err
	}
}

// highWater returns the highest generation ever written here, 0 if none is
// recorded (or the file is unreadable: the record's own generation still
// counts).
func (s *Store) highWater() uint64 {
	data, err := capped.ReadFile(filepath.Join(s.dir, GenerationFile), 32, GenerationFile)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// write seals a fresh secret and atomically replaces the record, pinned to
// the key of pin when there is one of the same sealer, carrying over from
// from (the current record, if any) the audit log's head (recorded anew)
// and the revocations, with the containers revoke names added. The caller
// holds the lock.
func (s *Store) write(ctx context.Context, gen uint64, lifecycleID string, pin, from *Record, revoke []string) (*Record, error) {
	sec, err := secretfs.NewRandom()
	if err != nil {
		return nil, err
	}
	defer sec.Zero()
	pt := sec.Bytes()
	defer secretfs.Zero(pt)
	var blob []byte
	if p, ok := s.sealer.(seal.KeyPinner); ok && pin != nil && pin.Sealer == s.sealer.Name() {
		blob, err = p.SealPinned(ctx, pt, pin.Blob)
	} else {
		blob, err = s.sealer.Seal(ctx, pt)
	}
	if err != nil {
		return nil, err
	}
	var prevHead *audit.Head
	var revoked []Revocation
	if from != nil {
		prevHead, revoked = from.AuditHead, from.Revoked
	}
	for _, id := range revoke {
		revoked = append(revoked, Revocation{ID: id, Generation: gen})
	}
	if len(revoked) > maxRevocations {
		// Dropping the oldest would lift it silently: a revoked id
		// stays revoked until the admin lifts it, so refuse instead.
		return nil, fmt.Errorf("%w: %d revocations are in force, the most a record keeps; lift one first with 'northstarctl revoke --lift ID' (northstarctl revoke --list names them)", ErrTooManyRevocations, maxRevocations)
	}
	rec := &Record{
		Format:      FormatVersion,
		Generation:  gen,
		LifecycleID: lifecycleID,
		Created:     s.now().UTC().Truncate(time.Second),
		Sealer:      s.sealer.Name(),
		Blob:        blob,
		AuditHead:   s.auditHead(prevHead),
		Revoked:     revoked,
	}
	if err := s.save(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// auditHead returns the head to record: the audit log's as it ends now
// (audit.Tail: no key needed, and it fsyncs the log first), unless that
// is no further than prev, the head recorded before. Never lower: a log
// cut since the last rotation must stay detected, not be blessed by the
// next one; a log that was cut and written on past prev differs from prev
// at prev's line, which verify reports anyway. An unreadable log keeps
// prev too: rotation is how a runtime restart gets its secret, and must
// not fail on the audit log.
func (s *Store) auditHead(prev *audit.Head) *audit.Head {
	path := filepath.Join(s.dir, audit.FileName)
	h, err := audit.Tail(path)
	if err != nil || h.Lines == 0 || prev != nil && h.Lines <= prev.Lines {
		return prev
	}
	// Forward only along the same chain: a log cut below prev and written
	// on past it has another line where prev's was. A prev older than every
	// file kept was pruned by the log's own rotation: trusted as pruning
	// is by verify (or the head would stop moving for good).
	if prev != nil {
		at, err := audit.LineHash(path, prev.Lines)
		if !errors.Is(err, audit.ErrPruned) && (err != nil || at != prev.Hash) {
			return prev
		}
	}
	return &h
}

// ResetAudit starts a new audit log: under the store lock, the log and its
// rotated files move to a new directory audit-<time>-* in the state
// directory (kept as evidence), and the record forgets its recorded head.
// It refuses while a writer (the agent) holds the log's lock: the writer
// would go on writing into the moved file. It returns the directory the
// files went to ("" when there were none).
func (s *Store) ResetAudit(ctx context.Context) (string, error) {
	var moved string
	err := s.locked(ctx, func() error {
		log := filepath.Join(s.dir, audit.FileName)
		unlock, err := flock.TryLock(audit.LockPath(log))
		if errors.Is(err, flock.ErrHeld) {
			return fmt.Errorf("the agent has %s open (it holds %s); stop it first", log, audit.LockFile)
		}
		if err != nil {
			return err
		}
		defer unlock()
		rec, err := s.Current()
		if err != nil && !errors.Is(err, ErrNotInitialized) {
			return err // the head could not be forgotten: move nothing
		}
		files, err := audit.Files(log)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			if moved, err = os.MkdirTemp(s.dir, "audit-"+s.now().UTC().Format("20060102T150405Z")+"-"); err != nil {
				return err
			}
			for _, f := range files {
				if err := os.Rename(f, filepath.Join(moved, filepath.Base(f))); err != nil {
					return err
				}
			}
		}
		// The checkpoint names a line of the old log: the new one starts
		// without one (a stale one would only be ignored, at a cost).
		if err := os.Remove(filepath.Join(s.dir, audit.CheckpointFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if rec == nil || rec.AuditHead == nil {
			return nil
		}
		rec.AuditHead = nil
		return s.save(rec)
	})
	return moved, err
}

// save atomically and durably replaces the record file. The caller holds
// the lock.
func (s *Store) save(rec *Record) error {
	rec.Format = FormatVersion // a format 1 record read here is written back as 2
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.dir, RecordFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if rec.Generation > s.highWater() {
		if err := atomicfile.Write(filepath.Join(s.dir, GenerationFile), []byte(strconv.FormatUint(rec.Generation, 10)+"\n"), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", GenerationFile, err)
		}
	}
	return nil
}

// locked runs fn holding the exclusive store lock, creating the state
// directory (0700) first if needed, and removes temporary files a crashed
// writer may have left.
func (s *Store) locked(ctx context.Context, fn func() error) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	unlock, err := flock.Lock(ctx, filepath.Join(s.dir, LockFile))
	if err != nil {
		return err
	}
	defer unlock()
	if ents, err := os.ReadDir(s.dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
				_ = os.Remove(filepath.Join(s.dir, e.Name()))
			}
		}
	}
	return fn()
}

// keyFormat is the format of a sealed key file.
const keyFormat = 1

// sealedKey is a key file: a key kept sealed across rotations.
type sealedKey struct {
	Format int    `json:"format"`
	Sealer string `json:"sealer"`
	Blob   []byte `json:"blob"`
}

// Key returns the key called name (size random bytes), creating and sealing
// it the first time. Unlike the lifecycle secret it survives rotations: the
// agent's root key and audit key live here (<name>.key.json). The caller
// zeroes the result.
func (s *Store) Key(ctx context.Context, name string, size int) ([]byte, error) {
	path := filepath.Join(s.dir, name+".key.json")
	if k, err := s.readKey(ctx, path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	var key []byte
	err := s.locked(ctx, func() error {
		var err error
		if key, err = s.readKey(ctx, path); err == nil || !errors.Is(err, os.ErrNotExist) {
			return err
		}
		key = make([]byte, size)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		var blob []byte
		cur, cerr := s.Current()
		if p, ok := s.sealer.(seal.KeyPinner); ok && cerr == nil && cur.Sealer == s.sealer.Name() {
			blob, err = p.SealPinned(ctx, key, cur.Blob)
		} else {
			blob, err = s.sealer.Seal(ctx, key)
		}
		if err != nil {
			clear(key)
			return err
		}
		data, err := json.MarshalIndent(sealedKey{Format: keyFormat, Sealer: s.sealer.Name(), Blob: blob}, "", "  ")
		if err != nil {
			return err
		}
		return atomicfile.Write(path, append(data, '\n'), 0o600)
	})
	return key, err
}

func (s *Store) readKey(ctx context.Context, path string) ([]byte, error) {
	data, err := capped.ReadFile(path, maxRecordSize, filepath.Base(path))
	if err != nil {
		return nil, err
	}
	var k sealedKey
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil || k.Format != keyFormat || len(k.Blob) == 0 {
		return nil, fmt.Errorf("%s: %w", path, seal.ErrCorrupt)
	}
	if k.Sealer != s.sealer.Name() {
		return nil, fmt.Errorf("%s: %w (sealed by %q, the config says %q)", path, ErrSealerMismatch, k.Sealer, s.sealer.Name())
	}
	key, err := s.sealer.Unseal(ctx, k.Blob)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return key, nil
}
