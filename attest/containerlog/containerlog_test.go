// SPDX-License-Identifier: Apache-2.0

package containerlog

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const index = DefaultIndex

// testLog is two batches of two and one containers, and one pending.
func testLog(t *testing.T) []Record {
	t.Helper()
	var recs []Record
	var batch [][sha256.Size]byte
	add := func(r Record) {
		recs = append(recs, r)
		if r.Content.Type == ContentContainer {
			batch = append(batch, r.Digest)
		} else {
			batch = nil
		}
	}
	ev := func(i int) Event {
		return Event{ID: fmt.Sprintf("c%d", i), Identity: fmt.Sprintf("ns/pod/c%d", i), Via: "hook",
			Config: sha256.Sum256([]byte{byte(i)}), Rootfs: "overlay lowerdir=/l1:/l2", Time: time.Unix(1700000000, int64(i)).UTC()}
	}
	add(Container(0, index, ev(0)))
	add(Container(1, index, ev(1)))
	add(Batch(2, index, batch))
	add(Container(3, index, ev(2)))
	add(Batch(4, index, batch))
	add(Container(5, index, ev(3)))
	return recs
}

func TestReplay(t *testing.T) {
	recs := testLog(t)
	parsed, err := Parse(Encode(recs))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := Replay(parsed, index)
	if err != nil {
		t.Fatal(err)
	}
	var want [sha256.Size]byte
	want = Extend(want, recs[2].Digest)
	want = Extend(want, recs[4].Digest)
	if rp.Value != want || rp.Batches != 2 || rp.Extended != 5 {
		t.Fatalf("replay: %x %d batches, %d extended; want %x 2 5", rp.Value, rp.Batches, rp.Extended, want)
	}
	var ids []string
	for _, e := range rp.Events {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{"c0", "c1", "c2"}) || len(rp.Pending) != 1 || rp.Pending[0].ID != "c3" {
		t.Fatalf("events %v, pending %v", ids, rp.Pending)
	}
	e := rp.Events[1]
	if e.Identity != "ns/pod/c1" || e.Via != "hook" || e.Config != sha256.Sum256([]byte{1}) || e.Rootfs != "overlay lowerdir=/l1:/l2" ||
		!e.Time.Equal(time.Unix(1700000000, 1)) {
		t.Fatalf("event 1 decodes as %+v", e)
	}
}

// TestTamperedLog: a record dropped, edited or moved is refused, naming
// the record where replay stops.
func TestTamperedLog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func([]Record) []Record
		want   string
	}{
		{"dropped", func(r []Record) []Record { return slices.Delete(r, 1, 2) }, "record 1: numbered 2"},
		{"dropped and renumbered", func(r []Record) []Record {
			r = slices.Delete(r, 1, 2)
			for i := range r {
				r[i] = newRecord(uint64(i), r[i].Index, r[i].Content)
			}
			return r
		}, "record 1: the batch does not list the 1 container records before it"},
		{"edited", func(r []Record) []Record {
			r[3].Content.Value = []byte(strings.Replace(string(r[3].Content.Value), "ns/pod/c2", "ns/pod/cX", 1))
			return r
		}, "record 3: its digest is not its content's"},
		{"edited with its digest", func(r []Record) []Record {
			c := r[3].Content
			c.Value = []byte(strings.Replace(string(c.Value), "ns/pod/c2", "ns/pod/cX", 1))
			r[3] = newRecord(3, index, c)
			return r
		}, "record 4: the batch does not list"},
		{"reordered", func(r []Record) []Record { r[0], r[1] = r[1], r[0]; return r }, "record 0: numbered 1"},
		{"another index", func(r []Record) []Record { r[0].Index++; return r }, "record 0: names NV index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Parse(Encode(tc.tamper(testLog(t))))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Replay(recs, index)
			if !errors.Is(err, ErrReplay) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("replay: %v; want %q", err, tc.want)
			}
		})
	}
}

func TestParseTruncated(t *testing.T) {
	b := Encode(testLog(t))
	recs, err := Parse(b[:len(b)-3])
	if !errors.Is(err, ErrTruncated) || len(recs) != 5 {
		t.Fatalf("parse of a log cut short: %d records, %v", len(recs), err)
	}
}

// TestTail: a tail of the log cut after a batch replays, from the value
// before it, to the whole log's value; from another value it does not.
func TestTail(t *testing.T) {
	recs := testLog(t)
	whole, err := Replay(recs, index)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Prefix(recs, index, whole.Value)
	if err != nil || n != 5 {
		t.Fatalf("prefix: %d, %v", n, err)
	}
	last, _ := recs[3].MarshalBinary()
	batch, _ := recs[4].MarshalBinary()
	start, from := Tail(recs, n, len(last)+len(batch))
	if start != 3 {
		t.Fatalf("tail starts at %d, want 3 (after the batch at 2)", start)
	}
	rp, err := ReplayFrom(recs[start:n], index, uint64(start), from)
	if err != nil || rp.Value != whole.Value || len(rp.Events) != 1 || rp.Events[0].ID != "c2" {
		t.Fatalf("tail replay: %+v, %v", rp, err)
	}
	if rp, err := ReplayFrom(recs[start:n], index, uint64(start), sha256.Sum256([]byte("another"))); err != nil || rp.Value == whole.Value {
		t.Fatalf("a tail from another value: %v", err)
	}
	if _, err := ReplayFrom(recs[start:n], index, uint64(start), [sha256.Size]byte{}); !errors.Is(err, ErrReplay) {
		t.Fatalf("a tail without the value before it: %v", err)
	}
	if start, _ := Tail(recs, n, 1<<20); start != 0 {
		t.Fatalf("a log that fits is sent whole; tail starts at %d", start)
	}
}

// FuzzParse: any bytes a verifier is sent parse and replay without a
// panic, and a log that parses encodes back to the same bytes.
func FuzzParse(f *testing.F) {
	recs := []Record{Batch(0, index, nil), Container(1, index, Event{ID: "c", Identity: "i", Via: "hook"})}
	recs = append(recs, Batch(2, index, [][sha256.Size]byte{recs[1].Digest}))
	f.Add(Encode(recs))
	f.Add([]byte{0, 0, 0, 0, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := Parse(b)
		if err != nil {
			return
		}
		if got := Encode(recs); string(got) != string(b) {
			t.Fatalf("a log that parses encodes as %x, was %x", got, b)
		}
		if rp, err := Replay(recs, index); err == nil {
			_, _ = Prefix(recs, index, rp.Value)
			_, _ = Tail(recs, rp.Extended, 100)
		}
	})
}
