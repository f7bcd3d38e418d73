// SPDX-License-Identifier: Apache-2.0

package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/flock"
)

// Limits bound the log on disk. Zero fields take the defaults.
type Limits struct {
	// MaxBytes: an Append that would grow the current file past it first
	// rotates the file (a single line larger than it still goes into a
	// fresh file).
	MaxBytes int64
	// Keep is how many rotated files stay; older ones are deleted.
	Keep int
}

// Defaults: 8 MiB holds some 30 000 events; five files of it verify in a
// fraction of a second at every agent start.
const (
	DefaultMaxBytes = 8 << 20
	DefaultKeep     = 4
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.Keep <= 0 {
		l.Keep = DefaultKeep
	}
	return l
}

// Log appends entries to a log file. It is safe for concurrent use.
type Log struct {
	path  string
	lim   Limits
	mu    sync.Mutex // guards f, size, head, dirty
	f     *os.File
	size  int64     // of the current file
	mac   hash.Hash // HMAC-SHA256 under the audit key, keyed once
	head  Head
	now   func() time.Time
	dirty bool // written since the last fsync (SyncEvery > 0)
	// sinceCheckpoint counts the bytes appended since the last checkpoint.
	sinceCheckpoint int64
	// unlock releases LockFile, held while the writer is open.
	unlock func()

	stop chan struct{} // ends the syncer (SyncEvery > 0)
	done chan struct{}
}

// LockFile, beside the log, is held by its one writer for as long as it
// is open: a second agent cannot interleave its chain with the first's,
// and a reset (store.ResetAudit) cannot move the files from under it. A
// lock, not a socket probe: the agent's socket may be invisible where the
// state directory is not (rootlesskit's private /run).
const LockFile = "audit.lock"

// LockPath is the LockFile of the log at path.
func LockPath(path string) string { return filepath.Join(filepath.Dir(path), LockFile) }

// Open opens (creating, 0600) the log at path for appending with key,
// after verifying what it and its rotated files hold against want, the
// head recorded at the last rotation (nil: none): a log that does not
// verify, or ends before want, is not extended (the caller decides what to
// do with it). The chain continues from where the files end.
//
// What a writer verified once it does not verify again: it leaves a
// checkpoint (CheckpointFile: the line it verified or wrote up to, under
// an HMAC of the key) every CheckpointEvery bytes and when it closes, and
// Open verifies from there on. So an agent restart costs the lines written
// since the last checkpoint, not the whole history (DESIGN.md §11: 0.5 s
// for the default 40 MB, minutes for the largest [audit] allows), and a
// line edited below the checkpoint is found by 'northstarctl audit
// verify', which checks everything, not by the next Open. A checkpoint
// whose line is not where it was (the log was cut or replaced) is
// ignored: everything is verified.
//
// A current file that ends in a line without its newline (a write cut
// short by a full disk or a crash) has that torn line cut off first, and
// the cut is the first event the writer appends: the torn bytes were
// never a whole, MACed line, so nothing that verified is lost.
func Open(path string, key []byte, lim Limits, want *Head) (w *Log, err error) {
	unlock, err := flock.TryLock(LockPath(path))
	if errors.Is(err, flock.ErrHeld) {
		return nil, fmt.Errorf("%s is open for writing elsewhere (another agent?): %w", path, err)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	torn, err := cutTornTail(path)
	if err != nil {
		return nil, fmt.Errorf("cut the torn last line of %s: %w", path, err)
	}
	res, err := verifyFiles(path, key, want, readCheckpoint(path, key))
	if errors.Is(err, errCheckpointMissed) {
		res, err = verifyFiles(path, key, want, nil)
	}
	if errors.Is(err, fs.ErrNotExist) && want != nil && want.Lines > 0 {
		return nil, fmt.Errorf("%w: %s is gone, the recorded head is line %d", ErrTruncated, filepath.Base(path), want.Lines)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	// Verified above by name; the descriptor must be that same file, or
	// a line slipped in between would be extended unchecked.
	if fi.Size() != res.Size {
		f.Close()
		return nil, fmt.Errorf("%s changed while it was verified", path)
	}
	w = &Log{path: path, lim: lim.withDefaults(), f: f, size: fi.Size(), mac: hmac.New(sha256.New, key), head: res.Head, now: time.Now, unlock: unlock}
	w.writeCheckpoint()
	if torn > 0 {
		if err := w.Append("audit-tail-cut", map[string]string{"bytes": strconv.FormatInt(torn, 10), "why": "the log ended in a line without its newline (a write cut short)"}); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

// cutTornTail cuts off a last line that has no newline (a torn write)
// from the file at path and returns how many bytes it cut.
func cutTornTail(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, err
	}
	// A line is at most the scanner's 1 MiB; look back that far.
	off := max(fi.Size()-(1<<20)-1, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return 0, err
	}
	if buf[len(buf)-1] == '\n' {
		return 0, nil
	}
	keep := off + int64(bytes.LastIndexByte(buf, '\n')+1)
	if keep == off && off > 0 {
		return 0, errors.New("its last line is longer than 1 MiB")
	}
	if err := f.Truncate(keep); err != nil {
		return 0, err
	}
	return fi.Size() - keep, f.Sync()
}

// CheckpointFile, beside the log, names the line its writer verified or
// wrote up to (see Open).
const CheckpointFile = "audit.checkpoint"

// CheckpointEvery is how many bytes a writer appends between checkpoints.
const CheckpointEvery = 1 << 20

// checkpoint is the content of CheckpointFile.
type checkpoint struct {
	Lines uint64 `json:"lines"`
	Hash  string `json:"hash"`
	MAC   string `json:"mac"`
}

// checkpointMAC is the MAC of a checkpoint by m, an HMAC-SHA256 under the
// audit key (reset here). Its message starts with a context no line of the
// log starts with (lines start with {"seq":), so a line's MAC never
// passes for a checkpoint's.
func checkpointMAC(m hash.Hash, h Head) string {
	m.Reset()
	fmt.Fprintf(m, "northstar/v1/audit-checkpoint\x00%d\x00%s", h.Lines, h.Hash)
	return hex.EncodeToString(m.Sum(nil))
}

// readCheckpoint returns the checkpoint beside the log at path if its MAC
// verifies under key; else nil (everything is verified).
func readCheckpoint(path string, key []byte) *Head {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(path), CheckpointFile))
	if err != nil || len(data) > 4<<10 {
		return nil
	}
	var c checkpoint
	if json.Unmarshal(data, &c) != nil || c.Lines == 0 {
		return nil
	}
	h := Head{Lines: c.Lines, Hash: c.Hash}
	if !hmac.Equal([]byte(c.MAC), []byte(checkpointMAC(hmac.New(sha256.New, key), h))) {
		return nil
	}
	return &h
}

// writeCheckpoint records the writer's head as verified. Best effort: a
// checkpoint that is not written only makes the next Open verify more.
// The caller holds w.mu or is the only user of w.
func (w *Log) writeCheckpoint() {
	w.sinceCheckpoint = 0
	if w.head.Lines == 0 {
		return
	}
	data, err := json.Marshal(checkpoint{Lines: w.head.Lines, Hash: w.head.Hash, MAC: checkpointMAC(w.mac, w.head)})
	if err == nil {
		_ = atomicfile.Replace(filepath.Join(filepath.Dir(w.path), CheckpointFile), data, 0o600)
	}
}

// SyncEvery makes Append write without waiting for the disk, and a
// background fsync run at most every d: a busy agent then pays one fsync
// per interval, not one per event (measured: a token pair took 0.7 ms with
// two fsyncs, most of it theirs). A host crash can lose the last interval
// of lines, which leaves a valid, shorter log: the cut-tail case that only
// a recorded Head detects. Call it once, before the first Append.
func (w *Log) SyncEvery(d time.Duration) {
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sync()
			}
		}
	}()
}

// sync fsyncs what was written, outside the lock: an fsync takes tens of
// milliseconds on a busy disk, and an Append (every audited request, every
// registration) must not wait for it. A rotation meanwhile syncs the old
// file itself before it lets it go.
func (w *Log) sync() {
	w.mu.Lock()
	f, dirty := w.f, w.dirty
	w.dirty = false
	w.mu.Unlock()
	if dirty {
		_ = f.Sync()
	}
}

// Append writes one event and syncs it to disk (or leaves that to
// SyncEvery), rotating the file first when the line would take it past
// Limits.MaxBytes.
func (w *Log) Append(event string, fields map[string]string) error {
	fields = capFields(fields)
	w.mu.Lock()
	defer w.mu.Unlock()
	e := &Entry{Seq: w.head.Lines + 1, Time: w.now().UTC(), Event: event, Fields: fields, Prev: w.head.Hash}
	l := append(appendLine(nil, w.mac, e), '\n')
	var rerr error
	if w.size > 0 && w.size+int64(len(l)) > w.lim.MaxBytes {
		// A failed rotation still appends: an oversized file is better
		// than a lost event. The next Append tries again.
		if rerr = w.rotate(); rerr != nil {
			rerr = fmt.Errorf("rotate audit log: %w", rerr)
		}
	}
	if n, err := w.f.Write(l); err != nil || n != len(l) {
		if err == nil {
			err = io.ErrShortWrite
		}
		// A part of a line (a full disk) would make the log end in a
		// line that does not verify: cut it, so the log stays whole and
		// the next Append, or the next agent, carries on from here.
		if terr := w.f.Truncate(w.size); terr != nil {
			err = errors.Join(err, fmt.Errorf("cut the partial line: %w", terr))
		}
		return errors.Join(rerr, fmt.Errorf("append audit line: %w", err))
	}
	w.size += int64(len(l))
	if w.sinceCheckpoint += int64(len(l)); w.sinceCheckpoint >= CheckpointEvery {
		defer w.writeCheckpoint() // after the head moves, below
	}
	w.head = Head{Lines: e.Seq, Hash: hashOf(l[:len(l)-1])}
	if w.stop != nil {
		w.dirty = true
	} else if err := w.f.Sync(); err != nil {
		return errors.Join(rerr, fmt.Errorf("sync audit log: %w", err))
	}
	return rerr
}

// MaxField bounds each field value of an entry, in bytes; longer values
// are cut there and marked. Fields carry what containers send (a path, a
// sender, an app): without a bound one request could write a line larger
// than Verify reads (1 MiB), after which the log would no longer open.
const MaxField = 512

// truncated marks a value capFields cut.
const truncated = "...(truncated)"

// capFields returns fields with every value cut to MaxField bytes (a copy,
// when one is cut; fields itself otherwise).
func capFields(fields map[string]string) map[string]string {
	var out map[string]string
	for k, v := range fields {
		if len(v) <= MaxField {
			continue
		}
		if out == nil {
			out = maps.Clone(fields)
		}
		out[k] = strings.ToValidUTF8(v[:MaxField-len(truncated)], "") + truncated
	}
	if out == nil {
		return fields
	}
	return out
}

// nextSuffix names the fresh file while a rotation prepares it; it is not
// numeric, so VerifyFiles never takes it for part of the chain.
const nextSuffix = ".next"

// rotate moves the current file to path.1 (path.k to path.k+1, those
// beyond Keep deleted) and continues in a new, empty path. The new file is
// created first, so the likely failures (no space, no inode) change
// nothing; a rename failing halfway leaves a gap in the numbers, which
// VerifyFiles accepts while the chain holds.
// Between the renames path is briefly missing: Tail then reads path.1,
// which holds the last line. The caller holds w.mu.
func (w *Log) rotate() error {
	next, err := os.OpenFile(w.path+nextSuffix, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// The old file's lines are on disk before it stops being the one the
	// agent syncs.
	if err := w.f.Sync(); err != nil {
		next.Close()
		return err
	}
	w.dirty = false
	// Every file from path.Keep up goes: the shift would overwrite
	// path.Keep anyway, and files beyond it (Keep was lowered) would stay
	// older than a file that no longer follows them, breaking the chain.
	ks, err := rotatedFiles(w.path)
	if err != nil {
		next.Close()
		return err
	}
	for _, k := range ks {
		if k < w.lim.Keep {
			continue
		}
		if err := os.Remove(rotated(w.path, k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			next.Close()
			return err
		}
	}
	for k := w.lim.Keep - 1; k >= 1; k-- {
		if err := os.Rename(rotated(w.path, k), rotated(w.path, k+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			next.Close()
			return err
		}
	}
	if err := os.Rename(w.path, rotated(w.path, 1)); err != nil {
		next.Close()
		return err
	}
	if err := os.Rename(w.path+nextSuffix, w.path); err != nil {
		// Put the current file back: the writer goes on appending to it
		// where verify reads it, not to a path.1 the next rotation would
		// shift past Keep and delete. (The shift leaves a gap, which
		// verify accepts while the chain holds.)
		if uerr := os.Rename(rotated(w.path, 1), w.path); uerr != nil {
			err = errors.Join(err, fmt.Errorf("and putting %s back: %w", filepath.Base(w.path), uerr))
		}
		next.Close()
		return err
	}
	w.f.Close()
	w.f, w.size = next, 0
	return syncDir(filepath.Dir(w.path))
}

func rotated(path string, k int) string { return path + "." + strconv.Itoa(k) }

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// VerifyHistory verifies the whole log, with the key, as it is when called
// (the files are opened under the writer's lock, then read while the
// writer goes on): what Open left to its checkpoint. The agent runs it in
// the background after it starts serving, so that a file edited or
// removed while it was stopped is reported without delaying its start.
func (w *Log) VerifyHistory(key []byte) (Result, error) {
	w.mu.Lock()
	files, err := listFiles(w.path)
	if err == nil {
		for i := range files {
			f, oerr := os.Open(files[i].name)
			if oerr != nil {
				err = oerr
				break
			}
			defer f.Close()
			files[i].f = f
			if files[i].name == w.path {
				files[i].size = w.size
			} else if fi, serr := f.Stat(); serr == nil {
				files[i].size = fi.Size()
			}
		}
	}
	w.mu.Unlock()
	if err != nil {
		return Result{}, err
	}
	return verifyList(w.path, files, key, nil, nil)
}

// Head returns where the log ends now.
func (w *Log) Head() Head {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.head
}

// Close syncs and closes the file.
func (w *Log) Close() error {
	if w.stop != nil {
		close(w.stop)
		<-w.done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.unlock()
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return err
	}
	w.writeCheckpoint()
	return w.f.Close()
}
