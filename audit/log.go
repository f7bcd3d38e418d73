package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

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
// after verifying what it and its rotated files hold (VerifyFiles) against
// want, the head recorded at the last rotation (nil: none): a log that
// does not verify, or ends before want, is not extended (the caller
// decides what to do with it). The chain continues from where the files
// end.
func Open(path string, key []byte, lim Limits, want *Head) (*Log, error) {
	return OpenEach(path, key, lim, want, nil)
}

// OpenEach is Open calling each (if not nil) with every entry of the log,
// oldest first, as it is verified: what the agent learns from its own
// history (the tokens already used) costs no second read of the files.
func OpenEach(path string, key []byte, lim Limits, want *Head, each func(*Entry)) (w *Log, err error) {
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
	res, err := verifyFiles(path, key, want, each)
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
	return &Log{path: path, lim: lim.withDefaults(), f: f, size: fi.Size(), mac: hmac.New(sha256.New, key), head: res.Head, now: time.Now, unlock: unlock}, nil
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

func (w *Log) sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirty {
		_ = w.f.Sync()
		w.dirty = false
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
	if _, err := w.f.Write(l); err != nil {
		return errors.Join(rerr, fmt.Errorf("append audit line: %w", err))
	}
	w.size += int64(len(l))
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
	return w.f.Close()
}
