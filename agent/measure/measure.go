// SPDX-License-Identifier: Apache-2.0

// Package measure is the agent's measured-container log (DESIGN.md §17,
// docs/attestation.md): every delivery of the secret appends a record to
// a TCG CEL log kept in the state directory (package
// attest/containerlog), and a writer in the background extends one
// digest a batch into an NV index of type TPM_NT_EXTEND that only the
// agent can write (its authValue is a key the agent keeps sealed).
//
// Appending never waits for the TPM: a container's start costs one
// write(2) to the log file. The writer takes what accumulated, writes a
// batch record listing it, syncs the file, and extends the batch's digest;
// a TPM that fails is retried (1 s doubling to a minute) without losing
// the batch, and one batch is in flight at a time, so the index follows
// the log in order. A batch record is on disk before its extend: an agent
// that dies in between finds, at its next start, the index one batch
// behind its log, and extends that batch then.
package measure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// FileName is the log's name in the state directory.
const FileName = "containers.cel"

// KeyName is the store key whose bytes are the index's authValue.
const KeyName = "measure"

// AuthSize is the authValue's size (the index's name algorithm's digest).
const AuthSize = sha256.Size

// Options say where the log and the index are.
type Options struct {
	TPM tpmconn.Options
	// Timeout bounds one conversation with the TPM (0: none).
	Timeout time.Duration
	// Index is the NV index (containerlog.DefaultIndex if 0).
	Index uint32
	// Auth is the key the index's authValue is made from (indexAuth),
	// AuthSize bytes; Open copies it.
	Auth []byte
	// Path is the log file.
	Path string
	// Interval is how long the writer gathers deliveries before it
	// extends their batch (default 100 ms): at most one extend, one NV
	// write, an interval.
	Interval time.Duration
	// Log gets one line when the TPM starts and stops failing.
	Log io.Writer
}

// Log is the open log. Its methods are safe for concurrent use.
type Log struct {
	opts Options
	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	mu             sync.Mutex // guards f, next, pending, inflight, extended, failing, closed
	f              *os.File
	next           uint64              // the next record's number
	pending        [][sha256.Size]byte // container records since the last batch
	inflight       bool                // a batch is written and not yet extended
	inflightDigest [sha256.Size]byte
	extended       int   // batches extended by this process
	failing        error // the last extend's error, nil once one succeeds
	closed         bool
	idle           *sync.Cond // signalled when pending and inflight are both empty
}

// Open opens the log at opts.Path (creating it), defines the index the
// first time, and checks the log replays to the index's value. The
// writer runs until Close.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Index == 0 {
		opts.Index = containerlog.DefaultIndex
	}
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if len(opts.Auth) != AuthSize {
		return nil, fmt.Errorf("measure: the index's auth is %d bytes, want %d", len(opts.Auth), AuthSize)
	}
	opts.Auth = append([]byte(nil), opts.Auth...)
	f, err := os.OpenFile(opts.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("measure: %w", err)
	}
	l := &Log{opts: opts, f: f, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	l.idle = sync.NewCond(&l.mu)
	if err := l.recover(ctx); err != nil {
		f.Close()
		return nil, err
	}
	go l.write()
	if len(l.pending) > 0 {
		l.kick()
	}
	return l, nil
}

// recover reads the log, drops a record cut short by a crash, and checks
// the index against it, finishing a batch a crash left unextended.
func (l *Log) recover(ctx context.Context) error {
	b, err := io.ReadAll(io.NewSectionReader(l.f, 0, 1<<40))
	if err != nil {
		return fmt.Errorf("measure: read %s: %w", l.opts.Path, err)
	}
	recs, err := containerlog.Parse(b)
	if errors.Is(err, containerlog.ErrTruncated) {
		// A write cut short (the agent died in it): the whole records stay.
		n := len(containerlog.Encode(recs))
		fmt.Fprintf(l.opts.Log, "northstar agent: measure: %s ends in a record cut short (%d bytes), dropped\n", l.opts.Path, len(b)-n)
		if err := l.f.Truncate(int64(n)); err != nil {
			return fmt.Errorf("measure: %w", err)
		}
	} else if err != nil {
		return l.mismatch(fmt.Sprintf("does not parse: %v", err))
	}
	rp, err := containerlog.Replay(recs, l.opts.Index)
	if err != nil {
		return l.mismatch(err.Error())
	}
	l.next = uint64(len(recs))
	for _, r := range recs[rp.Extended:] {
		l.pending = append(l.pending, r.Digest)
	}
	// The value before the last batch: what the index holds if the agent
	// died between writing the batch and extending it.
	var before [sha256.Size]byte
	var last *containerlog.Record
	if rp.Batches > 0 {
		last = &recs[rp.Extended-1]
		prev, err := containerlog.Replay(recs[:rp.Extended-1], l.opts.Index)
		if err != nil {
			return l.mismatch(err.Error())
		}
		before = prev.Value
	}
	return l.converse(ctx, func(tpm transport.TPM) error {
		pub, name, err := readPublic(tpm, l.opts.Index)
		if err != nil {
			return fmt.Errorf("measure: %w", err)
		}
		if pub == nil {
			if len(recs) > 0 {
				return l.mismatch(fmt.Sprintf("has %d records, and NV index %#x is not defined (the TPM was cleared or the index removed)", len(recs), l.opts.Index))
			}
			if err := define(tpm, l.opts.Index, l.opts.Auth); err != nil {
				return fmt.Errorf("measure: %w", err)
			}
			return l.begin(tpm)
		}
		if err := containerlog.CheckPublic(pub); err != nil {
			return fmt.Errorf("measure: %w: it is not the agent's; undefine it (tpm2_nvundefine -C o %#x) or set [measure] nv_index", err, l.opts.Index)
		}
		v, err := read(tpm, l.opts.Index, name)
		if err != nil {
			return fmt.Errorf("measure: %w", err)
		}
		switch {
		case v == rp.Value && len(recs) == 0:
			// Defined, and the agent stopped before its first batch.
			return l.begin(tpm)
		case v == rp.Value:
			return nil
		case last != nil && v == before:
			fmt.Fprintf(l.opts.Log, "northstar agent: measure: extending batch %d of %s, written before the agent stopped\n", rp.Batches, l.opts.Path)
			return Extend(tpm, l.opts.Index, l.opts.Auth, last.Digest[:])
		}
		return l.mismatch(fmt.Sprintf("replays to %s, NV index %#x holds %s (the index was redefined or extended by someone else, or the log was replaced)",
			hex.EncodeToString(rp.Value[:8]), l.opts.Index, hex.EncodeToString(v[:8])))
	})
}

// begin extends an empty first batch into the index the agent just
// defined: an index never written cannot be certified
// (TPM_RC_NV_UNINITIALIZED), and a verifier can then tell a host that
// measured nothing yet from one that measures nothing.
func (l *Log) begin(tpm transport.TPM) error {
	r := containerlog.Batch(0, l.opts.Index, nil)
	if err := l.writeRecord(r, true); err != nil {
		return fmt.Errorf("measure: %w", err)
	}
	l.next, l.extended = 1, 1
	return Extend(tpm, l.opts.Index, l.opts.Auth, r.Digest[:])
}

// mismatch is the one line of a log and an index that disagree.
func (l *Log) mismatch(why string) error {
	return fmt.Errorf("measure: the container log %s %s; what it measured can no longer be shown: move the log aside and undefine the index "+
		"(tpm2_nvundefine -C o %#x) to begin a new log, and tell this host's verifiers", l.opts.Path, why, l.opts.Index)
}

func (l *Log) converse(ctx context.Context, fn func(transport.TPM) error) error {
	if l.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opts.Timeout)
		defer cancel()
	}
	return tpmconn.Converse(ctx, l.opts.TPM, fn)
}

// ErrClosed: the log was closed.
var ErrClosed = errors.New("measure: the log is closed")

// Append records a delivery: one write to the log file, never the TPM.
// A zero e.Time is now.
func (l *Log) Append(e containerlog.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	r := containerlog.Container(l.next, l.opts.Index, e)
	if err := l.writeRecord(r, false); err != nil {
		return fmt.Errorf("measure: append to %s: %w", l.opts.Path, err)
	}
	l.next++
	l.pending = append(l.pending, r.Digest)
	l.kick()
	return nil
}

func (l *Log) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Wait returns once every record appended before it is extended into
// the index, or ctx ends.
func (l *Log) Wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.idle.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for (len(l.pending) > 0 || l.inflight) && ctx.Err() == nil && !l.closed {
		l.idle.Wait()
	}
	if l.failing != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (the last extend: %v)", ctx.Err(), l.failing)
	}
	return ctx.Err()
}

// Extended counts the batches this process extended.
func (l *Log) Extended() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.extended
}

// Close extends what is pending (once, within the TPM timeout) and closes
// the file.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.idle.Broadcast()
	return l.f.Close()
}

// write is the background writer: a batch an interval, one at a time.
func (l *Log) write() {
	defer close(l.done)
	backoff := time.Duration(0)
	for {
		select {
		case <-l.wake:
		case <-l.stop:
			l.batch(true)
			return
		}
		// Gather what comes within the interval, or wait out the backoff.
		select {
		case <-time.After(max(l.opts.Interval, backoff)):
		case <-l.stop:
			l.batch(true)
			return
		}
		if l.batch(false) {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, time.Second), time.Minute)
		l.kick()
	}
}

// batch writes a batch record for what is pending (unless one is in
// flight already) and extends it. It reports whether nothing is left.
func (l *Log) batch(last bool) bool {
	l.mu.Lock()
	if !l.inflight {
		if len(l.pending) == 0 {
			l.mu.Unlock()
			return true
		}
		r := containerlog.Batch(l.next, l.opts.Index, l.pending)
		if err := l.writeRecord(r, true); err != nil {
			l.mu.Unlock()
			l.fail(fmt.Errorf("write %s: %w", l.opts.Path, err))
			return false
		}
		l.next++
		l.pending = nil
		l.inflight = true
		l.inflightDigest = r.Digest
	}
	d := l.inflightDigest
	l.mu.Unlock()
	ctx := context.Background()
	err := l.converse(ctx, func(tpm transport.TPM) error { return Extend(tpm, l.opts.Index, l.opts.Auth, d[:]) })
	if err != nil {
		if !last {
			l.fail(err)
		}
		return false
	}
	l.mu.Lock()
	l.inflight = false
	l.extended++
	if l.failing != nil {
		fmt.Fprintf(l.opts.Log, "northstar agent: measure: extending NV index %#x works again\n", l.opts.Index)
		l.failing = nil
	}
	done := len(l.pending) == 0
	if done {
		l.idle.Broadcast()
	}
	l.mu.Unlock()
	return done
}

// writeRecord appends r, and with sync syncs the file (a batch: its
// records are on disk before its extend); a record not whole is cut off
// again. l.mu is held.
func (l *Log) writeRecord(r containerlog.Record, sync bool) error {
	b, _ := r.MarshalBinary()
	off, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if _, err = l.f.Write(b); err == nil && sync {
		err = l.f.Sync()
	}
	if err != nil {
		_ = l.f.Truncate(off)
	}
	return err
}

// fail says once that extends fail, until one succeeds.
func (l *Log) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing == nil {
		fmt.Fprintf(l.opts.Log, "northstar agent: measure: cannot extend NV index %#x, retrying: %v\n", l.opts.Index, err)
	}
	l.failing = err
}
