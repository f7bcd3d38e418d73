// SPDX-License-Identifier: Apache-2.0

package replay

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// clock is a settable time for a Memory under test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time               { return c.t }
func (c *clock) advance(d time.Duration)      { c.t = c.t.Add(d) }
func (c *clock) in(d time.Duration) time.Time { return c.t.Add(d) }

func nonce(i int) [NonceSize]byte {
	var n [NonceSize]byte
	n[0], n[1], n[2] = byte(i), byte(i>>8), byte(i>>16)
	return n
}

func open(t *testing.T, path string, lim Limits, c *clock) *Memory {
	t.Helper()
	m, err := Open(path, lim)
	if err != nil {
		t.Fatal(err)
	}
	m.Now = c.now
	t.Cleanup(func() { m.Close() })
	return m
}

// TestOnceUntilExpiry: a token is used once; its nonce is remembered until
// the token expires and not after.
func TestOnceUntilExpiry(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	m := New(Limits{})
	m.Now = c.now
	if err := m.Use("server", "client", nonce(1), c.in(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m.Use("server", "client", nonce(1), c.in(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second use: %v, want ErrReplayed", err)
	}
	c.advance(time.Minute)
	if m.Sweep(); m.Len() != 0 {
		t.Errorf("%d entries remembered after every token expired", m.Len())
	}
}

// TestOneAudienceFullLeavesTheOthers: the attack of DESIGN.md §11 in
// miniature: a container that fills its own audience's memory gets
// FullError for its own verifications; every other audience verifies on.
func TestOneAudienceFullLeavesTheOthers(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	m := New(Limits{PerAudience: 100, PerSender: 100})
	m.Now = c.now
	for i := range 100 {
		if err := m.Use("mallory", "mallory", nonce(i), c.in(time.Hour)); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
	}
	var full *FullError
	if err := m.Use("mallory", "mallory", nonce(1000), c.in(time.Hour)); !errors.As(err, &full) || !full.Audience || full.Until != time.Hour {
		t.Fatalf("mallory's 101st: %v, want the audience full for an hour", err)
	}
	if err := m.Use("server", "client", nonce(1001), c.in(time.Minute)); err != nil {
		t.Fatalf("another audience after mallory filled hers: %v", err)
	}
}

// TestOneSenderCannotFillAnAudience: a sender's tokens an audience
// verifies on request take at most its share.
func TestOneSenderCannotFillAnAudience(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	m := New(Limits{PerAudience: 100, PerSender: 10})
	m.Now = c.now
	for i := range 10 {
		if err := m.Use("broker", "mallory", nonce(i), c.in(time.Duration(i+1)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var full *FullError
	if err := m.Use("broker", "mallory", nonce(99), c.in(time.Hour)); !errors.As(err, &full) || full.Audience || full.Until != time.Minute {
		t.Fatalf("mallory beyond her share: %v, want her share full until her oldest expires (1m)", err)
	}
	if err := m.Use("broker", "client", nonce(100), c.in(time.Minute)); err != nil {
		t.Fatalf("another sender to the same audience: %v", err)
	}
}

// TestJournalSurvivesRestart: a token used before a restart stays used
// after it; one that expired meanwhile is not read back.
func TestJournalSurvivesRestart(t *testing.T) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	path := filepath.Join(t.TempDir(), FileName)
	m := open(t, path, Limits{}, c)
	if err := m.Use("server", "client", nonce(1), c.in(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := m.Use("server", "client", nonce(2), c.in(time.Second)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	c.advance(2 * time.Second)
	// Journal records are read back at the real time: set the record's
	// expiry check by reopening with the clock's time.
	m2, err := openAt(path, Limits{}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m2.Use("server", "client", nonce(1), c.in(time.Hour)); !errors.Is(err, ErrReplayed) {
		t.Errorf("a token used before the restart: %v, want ErrReplayed", err)
	}
	if m2.Len() != 1 {
		t.Errorf("%d entries after the restart, want 1 (the expired one dropped)", m2.Len())
	}
}

// shmPath is a journal path on /dev/shm when there is one (tmpfs: the
// fuzzer's thousands of journals cost no disk syncs), else in TempDir.
func shmPath(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "ns-replay-")
	if err != nil {
		return filepath.Join(t.TempDir(), FileName)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, FileName)
}

// openAt opens the journal at path as of c's time.
func openAt(path string, lim Limits, c *clock) (*Memory, error) {
	m := New(lim)
	m.Now = c.now
	j, err := openJournal(path, c.now(), func(r record) { m.insert(r.audience, r.sender, r.nonce, r.expiry) })
	if err != nil {
		return nil, err
	}
	m.j = j
	return m, nil
}

// TestTornRecordIsCut: a journal ending mid-record (a crash, a full disk)
// opens, without the torn record, and appends whole records after it.
func TestTornRecordIsCut(t *testing.T) {
	c := &clock{t: time.Now()}
	path := filepath.Join(t.TempDir(), FileName)
	m := open(t, path, Limits{}, c)
	if err := m.Use("server", "client", nonce(1), c.in(time.Hour)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, recordSize/2))
	f.Close()
	m2 := open(t, path, Limits{}, c)
	if err := m2.Use("server", "client", nonce(1), c.in(time.Hour)); !errors.Is(err, ErrReplayed) {
		t.Errorf("the whole record before the torn one: %v, want ErrReplayed", err)
	}
	if err := m2.Use("server", "client", nonce(2), c.in(time.Hour)); err != nil {
		t.Fatal(err)
	}
	m2.Close()
	if fi, _ := os.Stat(path); (fi.Size()-int64(len(magic)))%recordSize != 0 {
		t.Errorf("journal of %d bytes is not whole records", fi.Size())
	}
}

// TestFailedRecordFailsClosed: when the record cannot be written the use
// is an error (the caller answers 503), and the token is not half used:
// once the disk has room again, it verifies.
func TestFailedRecordFailsClosed(t *testing.T) {
	c := &clock{t: time.Now()}
	path := filepath.Join(t.TempDir(), FileName)
	m := open(t, path, Limits{}, c)
	// A journal whose file cannot be written: reopen it read-only under
	// the journal's feet.
	m.j.mu.Lock()
	good := m.j.f
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	m.j.f = ro
	m.j.mu.Unlock()
	err = m.Use("server", "client", nonce(1), c.in(time.Hour))
	if err == nil || errors.Is(err, ErrReplayed) {
		t.Fatalf("a use that could not be recorded: %v, want an error", err)
	}
	m.j.mu.Lock()
	m.j.f = good
	m.j.mu.Unlock()
	ro.Close()
	if err := m.Use("server", "client", nonce(1), c.in(time.Hour)); err != nil {
		t.Errorf("the same token once the journal is writable: %v", err)
	}
}

// TestCompaction: a journal mostly of expired tokens is rewritten with the
// live ones only, and keeps them across a restart.
func TestCompaction(t *testing.T) {
	c := &clock{t: time.Unix(2_000_000, 0)}
	path := filepath.Join(t.TempDir(), FileName)
	m, err := openAt(path, Limits{}, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range minCompact {
		if err := m.Use("server", "client", nonce(i), c.in(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(time.Minute)
	keep := nonce(1 << 20)
	if err := m.Use("server", "client", keep, c.in(time.Hour)); err != nil {
		t.Fatal(err)
	}
	m.Close()
	fi, _ := os.Stat(path)
	if fi.Size() > int64(len(magic)+4*recordSize) {
		t.Errorf("journal of %d bytes after compaction, want a few records", fi.Size())
	}
	m2, err := openAt(path, Limits{}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m2.Use("server", "client", keep, c.in(time.Hour)); !errors.Is(err, ErrReplayed) {
		t.Errorf("the live token after compaction and restart: %v", err)
	}
}

// FuzzMemory holds the memory to a model (a map of nonces with their
// expiry, counted per audience and sender): the same answers for any
// sequence of uses, time steps and restarts, and never more entries than
// the limits allow.
func FuzzMemory(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255, 0, 1, 2})
	f.Add([]byte{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7})
	f.Fuzz(func(t *testing.T, ops []byte) {
		lim := Limits{PerAudience: 6, PerSender: 3}
		c := &clock{t: time.Unix(5_000_000, 0)}
		path := shmPath(t)
		m, err := openAt(path, lim, c)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { m.Close() }()
		type slot struct {
			aud string
			n   [NonceSize]byte
		}
		type used struct {
			snd string
			exp int64
		}
		model := map[slot]used{}
		names := []string{"a", "b", "c"}
		for _, op := range ops {
			switch {
			case op == 255: // restart
				m.Close()
				if m, err = openAt(path, lim, c); err != nil {
					t.Fatal(err)
				}
				continue
			case op >= 240: // time passes
				c.advance(time.Duration(op-239) * 7 * time.Second)
				continue
			}
			aud, snd := names[op%3], names[op/3%3]
			s := slot{aud, nonce(int(op / 9 % 12))}
			exp := c.in(time.Duration(op%5+1) * 10 * time.Second)
			now := c.now().Unix()
			audN, sndN := 0, 0
			for k, u := range model {
				switch {
				case u.exp <= now:
					delete(model, k)
				case k.aud == aud:
					audN++
					if u.snd == snd {
						sndN++
					}
				}
			}
			_, replayed := model[s]
			full := !replayed && (audN >= lim.PerAudience || sndN >= lim.PerSender)
			got := m.Use(aud, snd, s.n, exp)
			var fe *FullError
			switch {
			case replayed && !errors.Is(got, ErrReplayed),
				full && !errors.As(got, &fe),
				!replayed && !full && got != nil:
				t.Fatalf("Use(%s, %s, nonce %d) = %v; the model says replayed %v, full %v", aud, snd, s.n[0], got, replayed, full)
			}
			if got == nil {
				model[s] = used{snd, exp.Unix()}
			}
			if l := m.Len(); l > lim.PerAudience*len(names) {
				t.Fatalf("%d entries remembered, more than the limits allow", l)
			}
		}
	})
}
