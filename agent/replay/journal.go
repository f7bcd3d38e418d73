// SPDX-License-Identifier: Apache-2.0

package replay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The journal is a file of fixed-size records after a magic header:
//
//	expiry (u64 unix seconds, big endian) | nonce (16) | audience (8) | sender (8)
//
// appended as tokens are used. A record torn by a crash or a full disk
// (the file ends mid-record) is cut off when the journal is opened, and a
// failed append is cut off at once, so the file always holds whole
// records. Records are written before Use returns and synced to disk at
// most syncEvery later, so an agent that is killed loses nothing and a
// host that crashes loses at most that interval (the same bound as the
// audit log's).
const (
	magic      = "NSUSED1\n"
	recordSize = 8 + NonceSize + 8 + 8
	syncEvery  = 100 * time.Millisecond
	// minCompact is the fewest records a journal holds before it is
	// compacted, however few of them are live.
	minCompact = 4096
)

// FileName is the journal's name in the agent's state directory.
const FileName = "used-tokens"

type record struct {
	audience, sender id
	nonce            [NonceSize]byte
	expiry           int64
}

func (r record) marshal(b []byte) {
	binary.BigEndian.PutUint64(b, uint64(r.expiry))
	copy(b[8:], r.nonce[:])
	copy(b[8+NonceSize:], r.audience[:])
	copy(b[16+NonceSize:], r.sender[:])
}

func unmarshal(b []byte) record {
	var r record
	r.expiry = int64(binary.BigEndian.Uint64(b))
	copy(r.nonce[:], b[8:])
	copy(r.audience[:], b[8+NonceSize:])
	copy(r.sender[:], b[16+NonceSize:])
	return r
}

type journal struct {
	path string

	mu        sync.Mutex // guards f, size, records, compactAt, dirty
	f         *os.File
	size      int64 // bytes of whole records and the header
	records   int   // in the file, live or not
	compactAt int
	dirty     bool

	stop, done chan struct{}
	closeOnce  sync.Once
}

// openJournal reads the journal at path (creating it), calls each with
// every record still live at now, and returns it open for appending.
func openJournal(path string, now time.Time, each func(record)) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open used-token journal: %w", err)
	}
	j := &journal{path: path, f: f, stop: make(chan struct{}), done: make(chan struct{})}
	if err := j.load(now.Unix(), each); err != nil {
		f.Close()
		return nil, fmt.Errorf("used-token journal %s: %w", path, err)
	}
	go j.syncer()
	return j, nil
}

func (j *journal) load(now int64, each func(record)) error {
	data, err := io.ReadAll(j.f)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		if _, err := j.f.Write([]byte(magic)); err != nil {
			return err
		}
		j.size = int64(len(magic))
		j.compactAt = minCompact
		return nil
	}
	if !bytes.HasPrefix(data, []byte(magic)) {
		return errors.New("not a journal of used tokens (bad header)")
	}
	body := data[len(magic):]
	whole := len(body) / recordSize * recordSize
	live := 0
	for off := 0; off < whole; off += recordSize {
		r := unmarshal(body[off : off+recordSize])
		if r.expiry > now {
			each(r)
			live++
		}
	}
	j.size = int64(len(magic) + whole)
	j.records = whole / recordSize
	j.compactAt = max(2*live, minCompact)
	if whole != len(body) {
		// Torn by a crash or a full disk: the record never made it.
		if err := j.f.Truncate(j.size); err != nil {
			return fmt.Errorf("cut a torn record: %w", err)
		}
	}
	_, err = j.f.Seek(j.size, io.SeekStart)
	return err
}

// append writes r; first it compacts the file (keeping what live lists)
// when most of it is dead.
func (j *journal) append(r record, now time.Time, live func(now int64, each func(record))) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("journal closed")
	}
	if j.records >= j.compactAt {
		// Best effort: a compaction that fails (no room for the new
		// file) leaves the old one, which still holds every record.
		_ = j.compact(now.Unix(), live)
	}
	var b [recordSize]byte
	r.marshal(b[:])
	if n, err := j.f.Write(b[:]); err != nil || n != recordSize {
		if err == nil {
			err = io.ErrShortWrite
		}
		// A partial record would make the file end mid-record: cut it.
		if terr := j.f.Truncate(j.size); terr != nil {
			err = errors.Join(err, fmt.Errorf("cut the partial record: %w", terr))
		}
		_, _ = j.f.Seek(j.size, io.SeekStart)
		return err
	}
	j.size += recordSize
	j.records++
	j.dirty = true
	return nil
}

// compact replaces the file by one holding only the live records. The
// caller holds j.mu.
func (j *journal) compact(now int64, live func(now int64, each func(record))) error {
	tmp := j.path + ".compact"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	buf := []byte(magic)
	n := 0
	live(now, func(r record) {
		var b [recordSize]byte
		r.marshal(b[:])
		buf = append(buf, b[:]...)
		n++
	})
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(buf); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	// Records appended from now on go to the new file: the old one is
	// synced first, so that a crash before the rename loses nothing.
	if err := j.f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fail(err)
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	j.f.Close()
	j.f, j.size, j.records, j.dirty = f, int64(len(buf)), n, false
	j.compactAt = max(2*n, minCompact)
	return nil
}

func (j *journal) syncer() {
	defer close(j.done)
	t := time.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			// Outside the lock, as audit.Log does: a verification must
			// not wait for an fsync. A compaction syncs the old file
			// before it lets it go.
			j.mu.Lock()
			f, dirty := j.f, j.dirty
			j.dirty = false
			j.mu.Unlock()
			if dirty && f != nil {
				_ = f.Sync()
			}
		}
	}
}

func (j *journal) close() error {
	j.closeOnce.Do(func() { close(j.stop) })
	<-j.done
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	return err
}
