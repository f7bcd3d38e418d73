// SPDX-License-Identifier: Apache-2.0

package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/internal/testenv"
)

var key = bytes.Repeat([]byte{5}, 32)

func writeLog(t *testing.T, n int) (string, Head) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(p, key, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < n; i++ {
		if err := w.Append("token-issued", map[string]string{"sender": "client", "audience": "server", "token_id": "0123"}); err != nil {
			t.Fatal(err)
		}
	}
	return p, w.Head()
}

func lines(t *testing.T, p string) []string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func verify(ls []string, k []byte, head *Head) error {
	_, err := Verify(strings.NewReader(strings.Join(ls, "\n")+"\n"), k, head)
	return err
}

func TestIntactLogVerifiesAndReopens(t *testing.T) {
	p, head := writeLog(t, 5)
	if err := verify(lines(t, p), key, &head); err != nil {
		t.Fatal(err)
	}
	w, err := Open(p, key, Limits{}, nil) // continues the chain
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append("rotated", map[string]string{"generation": "2"}); err != nil {
		t.Fatal(err)
	}
	h := w.Head()
	w.Close()
	if h.Lines != 6 {
		t.Fatalf("head after reopen %+v", h)
	}
	if err := verify(lines(t, p), key, &h); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingIsDetected(t *testing.T) {
	p, head := writeLog(t, 5)
	orig := lines(t, p)
	forger := bytes.Repeat([]byte{6}, 32)
	forged, _ := line(forger, &Entry{Seq: 3, Event: "token-issued", Prev: hashOf([]byte(orig[1]))})
	tests := []struct {
		name     string
		edit     func([]string) []string
		head     *Head
		wantLine uint64
		wantErr  error
	}{
		{"an edited field", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"client"`, `"mallory"`, 1)
			return l
		}, nil, 3, nil},
		{"a removed line", func(l []string) []string { return append(l[:1:1], l[2:]...) }, nil, 2, nil},
		{"two lines swapped", func(l []string) []string { l[1], l[2] = l[2], l[1]; return l }, nil, 2, nil},
		{"a line written without the key", func(l []string) []string { l[2] = string(forged); return l }, nil, 3, nil},
		{"a duplicated line", func(l []string) []string { return append(l[:3:3], l[2:]...) }, nil, 4, nil},
		{"the tail cut off, against the head", func(l []string) []string { return l[:3] }, &head, 0, ErrTruncated},
		{"four of five lines, against the head", func(l []string) []string { return l[:4] }, &head, 0, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.edit(append([]string(nil), orig...)), key, tt.head)
			var bad *BadLineError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
				}
			case !errors.As(err, &bad) || bad.Line != tt.wantLine:
				t.Fatalf("Verify = %v, want line %d named", err, tt.wantLine)
			}
			t.Logf("%v", err)
		})
	}
	// Without a head, a cut tail is a valid shorter log: the documented limit.
	if err := verify(orig[:3], key, nil); err != nil {
		t.Errorf("a cut log without a head: %v", err)
	}
	// The wrong key fails at line 1.
	var bad *BadLineError
	if err := verify(orig, bytes.Repeat([]byte{9}, 32), nil); !errors.As(err, &bad) || bad.Line != 1 {
		t.Errorf("wrong key: %v", err)
	}
}

func TestOpenRefusesATamperedLog(t *testing.T) {
	p, _ := writeLog(t, 3)
	// Without a checkpoint (removed here), Open verifies every line.
	if err := os.Remove(filepath.Join(filepath.Dir(p), CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	l := lines(t, p)
	l[1] = strings.Replace(l[1], "server", "serveR", 1)
	if err := os.WriteFile(p, []byte(strings.Join(l, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, key, Limits{}, nil); err == nil {
		t.Fatal("Open extended a log that does not verify")
	}
}

// TestCheckpoint: Open verifies only what was written after the last
// checkpoint; VerifyFiles (audit verify) still checks everything. A
// checkpoint that is forged, or whose line is no longer there, is ignored.
func TestCheckpoint(t *testing.T) {
	p, _ := writeLog(t, 5) // closed: checkpoint at line 5
	cp := filepath.Join(filepath.Dir(p), CheckpointFile)
	good, err := os.ReadFile(cp)
	if err != nil {
		t.Fatalf("no checkpoint after Close: %v", err)
	}
	w, err := Open(p, key, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := w.Append("token-issued", map[string]string{"sender": "client", "audience": "server"}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close() // checkpoint at line 8
	orig := lines(t, p)
	write := func(ls []string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(strings.Join(ls, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	open := func() error {
		w, err := Open(p, key, Limits{}, nil)
		if err == nil {
			w.Close()
		}
		return err
	}
	// An edit below the checkpoint: not looked at by Open, found by verify.
	early := append([]string(nil), orig...)
	early[2] = strings.Replace(early[2], "server", "serveR", 1)
	write(early)
	if err := open(); err != nil {
		t.Fatalf("Open verified below its checkpoint: %v", err)
	}
	var bad *BadLineError
	if _, err := VerifyFiles(p, key, nil); !errors.As(err, &bad) || bad.Line != 3 {
		t.Errorf("VerifyFiles of an edit below the checkpoint: %v, want line 3", err)
	}
	// The checkpoint names a line that is no longer there (the log cut
	// below it): everything is verified, and the early edit found.
	write(early[:6])
	if err := open(); !errors.As(err, &bad) || bad.Line != 3 {
		t.Errorf("Open of a log cut below its checkpoint: %v, want line 3 found", err)
	}
	// A forged checkpoint is ignored the same way.
	write(early)
	forged := bytes.Replace(good, []byte(`"lines":5`), []byte(`"lines":8`), 1)
	if err := os.WriteFile(cp, forged, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := open(); !errors.As(err, &bad) || bad.Line != 3 {
		t.Errorf("Open with a forged checkpoint: %v, want everything verified", err)
	}
	// An edit after the checkpoint is always found by Open.
	write(orig)
	if err := os.WriteFile(cp, good, 0o600); err != nil { // line 5
		t.Fatal(err)
	}
	late := append([]string(nil), orig...)
	late[6] = strings.Replace(late[6], "server", "serveR", 1)
	write(late)
	if err := open(); !errors.As(err, &bad) || bad.Line != 7 {
		t.Errorf("Open of an edit after the checkpoint: %v, want line 7", err)
	}
}

// TestTornTailIsCut: a log ending in a line cut short (a full disk, a
// crash mid-write) opens: the torn bytes go, the cut is the first event
// after them, and the log verifies.
func TestTornTailIsCut(t *testing.T) {
	p, _ := writeLog(t, 3)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	const torn = `{"seq":4,"time":"2026-12-01T00:00:00Z","event":"token-iss`
	f.WriteString(torn)
	f.Close()
	w, err := Open(p, key, Limits{}, nil)
	if err != nil {
		t.Fatalf("Open of a log with a torn last line: %v", err)
	}
	w.Close()
	res, err := VerifyFiles(p, key, nil)
	if err != nil || res.Head.Lines != 4 {
		t.Fatalf("after the cut: %+v %v, want 4 lines that verify", res, err)
	}
	if l := lines(t, p); !strings.Contains(l[3], `"event":"audit-tail-cut"`) || !strings.Contains(l[3], fmt.Sprintf(`"bytes":"%d"`, len(torn))) {
		t.Errorf("the cut is not recorded: %s", l[3])
	}
}

// TestFailedAppendLeavesNoPartialLine: a write cut short (here by
// RLIMIT_FSIZE, as a full disk would) is an error, leaves no part of the
// line behind, and the log opens and verifies afterwards.
func TestFailedAppendLeavesNoPartialLine(t *testing.T) {
	p, _ := writeLog(t, 2)
	w, err := Open(p, key, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	testenv.WithFileSizeLimit(t, fi.Size()+50, func() {
		if err := w.Append("token-issued", map[string]string{"sender": "client", "audience": "server"}); err == nil {
			t.Error("an append past the file size limit succeeded")
		}
	})
	if fi2, _ := os.Stat(p); fi2.Size() != fi.Size() {
		t.Errorf("the log grew by %d bytes of a failed line", fi2.Size()-fi.Size())
	}
	if err := w.Append("token-issued", map[string]string{"sender": "client"}); err != nil {
		t.Fatalf("the next append, with room again: %v", err)
	}
	w.Close()
	if res, err := VerifyFiles(p, key, nil); err != nil || res.Head.Lines != 3 {
		t.Errorf("after a failed append: %+v %v", res, err)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(""))
	l, _ := line(key, &Entry{Seq: 1, Event: "x"})
	f.Add(append(l, '\n'))
	f.Add([]byte(`{"seq":1,"mac":"00"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		head, err := Verify(bytes.NewReader(data), key, nil)
		if err == nil && head.Lines > 0 && head.Hash == "" {
			t.Fatal("verified lines without a hash")
		}
	})
}

func TestSyncEvery(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(p, key, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.SyncEvery(10 * time.Millisecond)
	for i := 0; i < 20; i++ {
		if err := w.Append("token-issued", nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	head := w.Head()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := verify(lines(t, p), key, &head); err != nil || head.Lines != 20 {
		t.Fatalf("after batched syncs: %v (%d lines)", err, head.Lines)
	}
}

// rotatingLog writes n entries to a log rotating at maxBytes, keeping keep
// old files, and returns its path and head.
func rotatingLog(t *testing.T, n int, maxBytes int64, keep int) (string, Head) {
	t.Helper()
	p := filepath.Join(t.TempDir(), FileName)
	w, err := Open(p, key, Limits{MaxBytes: maxBytes, Keep: keep}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := w.Append("token-issued", map[string]string{"sender": "client", "token_id": strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	head := w.Head()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return p, head
}

func TestTail(t *testing.T) {
	p, head := writeLog(t, 5)
	if got, err := Tail(p); err != nil || got != head {
		t.Fatalf("Tail = %+v, %v; want %+v", got, err, head)
	}
	// A partial last line (an append in progress, or cut mid-line) is
	// ignored: the head is the last complete line.
	data, _ := os.ReadFile(p)
	partial := append(bytes.Clone(data), `{"seq":6,"time":"2`...)
	if err := os.WriteFile(p, partial, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Tail(p); err != nil || got != head {
		t.Errorf("Tail with a partial last line = %+v, %v; want %+v", got, err, head)
	}
	// ...which Verify reports.
	if _, err := VerifyFiles(p, key, nil); err == nil {
		t.Error("VerifyFiles accepted a partial last line")
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, FileName)
	if got, err := Tail(missing); err != nil || got != (Head{}) {
		t.Errorf("Tail of no log = %+v, %v; want no head", got, err)
	}
	if err := os.WriteFile(missing, []byte("not json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Tail(missing); err == nil {
		t.Error("Tail took a line that is no audit entry")
	}
	// Lines longer than the window: no head, an error.
	if err := os.WriteFile(missing, bytes.Repeat([]byte("x"), tailWindow+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Tail(missing); err == nil {
		t.Error("Tail found a line in 64 KiB without a newline")
	}
}

func TestTailOfALongLog(t *testing.T) {
	p, head := rotatingLog(t, 1000, 1<<30, 1) // > 64 KiB, one file
	if fi, _ := os.Stat(p); fi.Size() <= tailWindow {
		t.Fatalf("log of %d bytes: too small to test the window", fi.Size())
	}
	if got, err := Tail(p); err != nil || got != head {
		t.Fatalf("Tail = %+v, %v; want %+v", got, err, head)
	}
}

func TestRotation(t *testing.T) {
	const maxBytes, keep = 2000, 3
	p, head := rotatingLog(t, 200, maxBytes, keep)
	// The bound: path and keep rotated files, none beyond, each within
	// maxBytes.
	for k := 0; k <= keep+1; k++ {
		name := p
		if k > 0 {
			name = rotated(p, k)
		}
		fi, err := os.Stat(name)
		switch {
		case k <= keep && err != nil:
			t.Fatalf("%s: %v", name, err)
		case k > keep && err == nil:
			t.Fatalf("%s kept beyond keep = %d", name, keep)
		case err == nil && fi.Size() > maxBytes:
			t.Errorf("%s is %d bytes, over %d", name, fi.Size(), maxBytes)
		}
	}
	res, err := VerifyFiles(p, key, &head)
	if err != nil {
		t.Fatal(err)
	}
	if res.Head != head || res.First <= 1 || len(res.Files) != keep+1 {
		t.Fatalf("VerifyFiles = %+v, want head %+v, pruned, %d files", res, head, keep+1)
	}
	// The first line of each newer file names the last hash of the older.
	for k := keep; k >= 1; k-- {
		older := lines(t, rotated(p, k))
		newerName := p
		if k > 1 {
			newerName = rotated(p, k-1)
		}
		var e Entry
		if err := json.Unmarshal([]byte(lines(t, newerName)[0]), &e); err != nil {
			t.Fatal(err)
		}
		if e.Prev != hashOf([]byte(older[len(older)-1])) {
			t.Errorf("the first line of %s does not name the last of %s", newerName, rotated(p, k))
		}
	}
	if got, err := Tail(p); err != nil || got != head {
		t.Errorf("Tail after rotations = %+v, %v; want %+v", got, err, head)
	}
	// Reopening continues the chain across the files.
	w, err := Open(p, key, Limits{MaxBytes: maxBytes, Keep: keep}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append("lifecycle-started", nil); err != nil {
		t.Fatal(err)
	}
	h := w.Head()
	w.Close()
	if _, err := VerifyFiles(p, key, &h); err != nil || h.Lines != head.Lines+1 {
		t.Errorf("after reopening: %v, head %+v", err, h)
	}
}

func TestTailFallsBackToTheRotatedFile(t *testing.T) {
	p, head := rotatingLog(t, 30, 1000, 2)
	// Right after a rotation the current file is empty (or, between the
	// renames, missing): the head is the last line of audit.log.1.
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	last := lines(t, rotated(p, 1))
	want := Head{Hash: hashOf([]byte(last[len(last)-1]))}
	var e Entry
	json.Unmarshal([]byte(last[len(last)-1]), &e)
	want.Lines = e.Seq
	if want.Lines >= head.Lines {
		t.Fatalf("test setup: %d lines in %s, head %d", want.Lines, rotated(p, 1), head.Lines)
	}
	if got, err := Tail(p); err != nil || got != want {
		t.Errorf("Tail of an empty current file = %+v, %v; want %+v", got, err, want)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if got, err := Tail(p); err != nil || got != want {
		t.Errorf("Tail of a missing current file = %+v, %v; want %+v", got, err, want)
	}
	// Without audit.log the chain still verifies, up to audit.log.1.
	if res, err := VerifyFiles(p, key, nil); err != nil || res.Head != want {
		t.Errorf("VerifyFiles without the current file = %+v, %v", res, err)
	}
}

func TestRotatedFilesTampering(t *testing.T) {
	const maxBytes, keep = 1500, 3
	tests := []struct {
		name string
		edit func(t *testing.T, p string)
		head bool // verify against the head
		want func(err error) bool
	}{
		{"a deleted middle file", func(t *testing.T, p string) { os.Remove(rotated(p, 2)) }, false,
			func(err error) bool {
				return errors.Is(err, ErrMissingFile) && strings.Contains(err.Error(), "audit.log.2 is gone")
			}},
		{"the newest rotated file deleted", func(t *testing.T, p string) { os.Remove(rotated(p, 1)) }, false,
			func(err error) bool {
				return errors.Is(err, ErrMissingFile) && strings.Contains(err.Error(), "audit.log.1 is gone")
			}},
		{"a rotation interrupted between its renames (a gap, the chain intact)", func(t *testing.T, p string) {
			// rotate shifts path.k to path.k+1 from the oldest down, then
			// path to path.1: a crash after the shifts leaves no path.1.
			ks, _ := rotatedFiles(p)
			for i := len(ks) - 1; i >= 0; i-- {
				if err := os.Rename(rotated(p, ks[i]), rotated(p, ks[i]+1)); err != nil {
					t.Fatal(err)
				}
			}
		}, true, func(err error) bool { return err == nil }},
		{"the current file deleted with its predecessors kept, cut against the head", func(t *testing.T, p string) { os.Remove(p) }, true,
			func(err error) bool { return errors.Is(err, ErrTruncated) }},
		{"every rotated file deleted", func(t *testing.T, p string) {
			for k := 1; k <= keep; k++ {
				os.Remove(rotated(p, k))
			}
		}, false, func(err error) bool {
			var bad *BadLineError
			return errors.As(err, &bad) && bad.File == FileName && bad.Line == 1 && strings.Contains(bad.Why, "no older rotated file")
		}},
		{"an edited line in a rotated file", func(t *testing.T, p string) {
			l := lines(t, rotated(p, 2))
			l[2] = strings.Replace(l[2], "client", "clienT", 1)
			os.WriteFile(rotated(p, 2), []byte(strings.Join(l, "\n")+"\n"), 0o600)
		}, false, func(err error) bool {
			var bad *BadLineError
			return errors.As(err, &bad) && bad.File == "audit.log.2" && bad.Line == 3 && strings.HasPrefix(err.Error(), "audit.log.2 line 3: ")
		}},
		{"the last line of a rotated file removed", func(t *testing.T, p string) {
			l := lines(t, rotated(p, 1))
			os.WriteFile(rotated(p, 1), []byte(strings.Join(l[:len(l)-1], "\n")+"\n"), 0o600)
		}, false, func(err error) bool {
			var bad *BadLineError
			return errors.As(err, &bad) && bad.File == FileName && bad.Line == 1
		}},
		{"the tail cut off below the head", func(t *testing.T, p string) {
			l := lines(t, p)
			os.WriteFile(p, []byte(strings.Join(l[:len(l)-2], "\n")+"\n"), 0o600)
		}, true, func(err error) bool { return errors.Is(err, ErrTruncated) }},
		{"the tail cut and written on", func(t *testing.T, p string) {
			l := lines(t, p)
			os.WriteFile(p, []byte(strings.Join(l[:len(l)-2], "\n")+"\n"), 0o600)
			w, err := Open(p, key, Limits{MaxBytes: maxBytes, Keep: keep}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 4; i++ {
				w.Append("x", nil)
			}
			w.Close()
		}, true, func(err error) bool {
			var bad *BadLineError
			return errors.As(err, &bad) && strings.Contains(bad.Why, "differs from the recorded head")
		}},
		{"the oldest file deleted (pruning: by design, not detected)", func(t *testing.T, p string) { os.Remove(rotated(p, keep)) }, true,
			func(err error) bool { return err == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, head := rotatingLog(t, 100, maxBytes, keep)
			if _, err := VerifyFiles(p, key, &head); err != nil {
				t.Fatalf("before the edit: %v", err)
			}
			tt.edit(t, p)
			var want *Head
			if tt.head {
				want = &head
			}
			_, err := VerifyFiles(p, key, want)
			if !tt.want(err) {
				t.Fatalf("VerifyFiles = %v", err)
			}
			t.Logf("%v", err)
			// Open knows no recorded head; without a checkpoint (the
			// first open of a log, or one lost) it must not extend
			// whatever else is wrong. With one, VerifyHistory finds it.
			if err != nil && !tt.head {
				w, oerr := Open(p, key, Limits{MaxBytes: maxBytes, Keep: keep}, nil)
				if oerr != nil {
					t.Fatalf("Open with the writer's checkpoint: %v", oerr)
				}
				if _, herr := w.VerifyHistory(key); herr == nil {
					t.Error("VerifyHistory passed a log that does not verify")
				}
				w.Close()
				os.Remove(filepath.Join(filepath.Dir(p), CheckpointFile))
				if _, oerr := Open(p, key, Limits{MaxBytes: maxBytes, Keep: keep}, nil); oerr == nil {
					t.Error("Open without a checkpoint extended a log that does not verify")
				}
			}
		})
	}
}

func FuzzTail(f *testing.F) {
	f.Add([]byte(""), false)
	l, _ := line(key, &Entry{Seq: 1, Event: "x"})
	f.Add(append(l, '\n'), true)
	f.Add([]byte("{\"seq\":1}\n{\"seq\":"), true)
	f.Add([]byte("\n\n"), false)
	// Tail itself, on a real file: what store runs at every rotation, on
	// whatever the state directory holds.
	p := filepath.Join(f.TempDir(), FileName)
	f.Fuzz(func(t *testing.T, data []byte, whole bool) {
		h, err := lastEntry(data, whole)
		if err == nil && h.Lines > 0 && len(h.Hash) != 64 {
			t.Fatalf("head %+v without a hash", h)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if h, err := Tail(p); err == nil && h.Lines > 0 && len(h.Hash) != 64 {
			t.Fatalf("Tail: head %+v without a hash", h)
		}
	})
}

// TestLoweredKeep: old files beyond a lowered Keep go at the next
// rotation; left behind, they would precede a file that does not follow
// them.
func TestLoweredKeep(t *testing.T) {
	const maxBytes = 1000
	p, _ := rotatingLog(t, 60, maxBytes, 4)
	if _, err := os.Stat(rotated(p, 4)); err != nil {
		t.Fatalf("test setup: %v", err)
	}
	w, err := Open(p, key, Limits{MaxBytes: maxBytes, Keep: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := w.Append("token-issued", nil); err != nil {
			t.Fatal(err)
		}
	}
	head := w.Head()
	w.Close()
	for _, k := range []int{3, 4} {
		if _, err := os.Stat(rotated(p, k)); err == nil {
			t.Errorf("%s stays beyond keep = 2", rotated(p, k))
		}
	}
	if _, err := VerifyFiles(p, key, &head); err != nil {
		t.Fatal(err)
	}
}

// FuzzEntry: appendEntry encodes every entry byte for byte as json.Marshal
// does, so the hand-written encoder changes nothing but speed.
func FuzzEntry(f *testing.F) {
	f.Add(uint64(1), int64(1764115200), int64(0), "token-issued", "sender", "client", "app", "mqtt", "")
	f.Add(uint64(7), int64(0), int64(999999999), "refused", "error", "bad \"json\" <x> & \u2028 \x00\xff", "", "", "0f")
	f.Fuzz(func(t *testing.T, seq uint64, sec, nsec int64, event, k1, v1, k2, v2, prev string) {
		// Years 0-9999: beyond them json.Marshal refuses a time.
		tm := time.Unix(sec%253402300799, nsec%1e9).UTC()
		if tm.Year() < 0 {
			tm = time.Unix(0, 0).UTC()
		}
		e := &Entry{Seq: seq, Time: tm, Event: event, Prev: prev}
		if k1 != "" || k2 != "" {
			e.Fields = map[string]string{k1: v1, k2: v2}
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Skip(err)
		}
		if got := appendEntry(nil, e); !bytes.Equal(got, want) {
			t.Fatalf("appendEntry\n got %s\nwant %s", got, want)
		}
	})
}

// TestFieldsAreCapped: a field a container controls (a path of a megabyte)
// cannot make a line the log could not read back.
func TestFieldsAreCapped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	key := bytes.Repeat([]byte{7}, 32)
	w, err := Open(path, key, Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("\xff/x", 1<<20)
	fields := map[string]string{"path": long, "identity": "client"}
	if err := w.Append("refused", fields); err != nil {
		t.Fatal(err)
	}
	if fields["path"] != long {
		t.Error("Append changed the caller's map")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 4*MaxField {
		t.Errorf("a line of %d bytes from a 3 MiB field", len(data))
	}
	if _, err := VerifyFiles(path, key, nil); err != nil {
		t.Errorf("the log does not verify: %v", err)
	}
	if !strings.Contains(string(data), truncated) || !strings.Contains(string(data), `"identity":"client"`) {
		t.Errorf("want the path cut and marked, the identity whole:\n%.300s", data)
	}
}

// TestOpenChecksTheRecordedHead: the agent does not extend a log that
// ends before, or does not pass through, the head recorded at the last
// rotation; it does extend one that got past it, or whose rotation was
// interrupted between its renames.
func TestOpenChecksTheRecordedHead(t *testing.T) {
	p, head := rotatingLog(t, 60, 2048, 4)
	lines := func() []string {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	}
	all := lines()
	if err := os.WriteFile(p, []byte(strings.Join(all[:len(all)-1], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, key, Limits{MaxBytes: 2048, Keep: 4}, &head); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Open of a log cut below its head = %v, want ErrTruncated", err)
	}
	// Written on past the head without it (Open without a head): the head
	// line is another one now.
	w, err := Open(p, key, Limits{MaxBytes: 2048, Keep: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		w.Append("x", nil)
	}
	w.Close()
	if _, err := Open(p, key, Limits{MaxBytes: 2048, Keep: 4}, &head); !errors.Is(err, ErrHeadMismatch) {
		t.Fatalf("Open of a log cut and written on = %v, want ErrHeadMismatch", err)
	}
	if at, err := LineHash(p, head.Lines); err != nil || at == head.Hash {
		t.Fatalf("LineHash at the head of the rewritten log = %q, %v; want another hash", at, err)
	}

	p, head = rotatingLog(t, 60, 2048, 4)
	if at, err := LineHash(p, head.Lines); err != nil || at != head.Hash {
		t.Fatalf("LineHash at the head = %q, %v; want %q", at, err, head.Hash)
	}
	res, err := VerifyFiles(p, key, &head)
	if err != nil || len(res.Files) < 3 {
		t.Fatalf("want a log over 3 files or more: %+v, %v", res, err)
	}
	if at, err := LineHash(p, res.First); err != nil || at == "" {
		t.Fatalf("LineHash of the oldest line kept (in the oldest file) = %q, %v", at, err)
	}
	if _, err := LineHash(p, res.First-1); err == nil {
		t.Fatal("LineHash found a pruned line")
	}
	ks, _ := rotatedFiles(p)
	for i := len(ks) - 1; i >= 0; i-- {
		if err := os.Rename(rotated(p, ks[i]), rotated(p, ks[i]+1)); err != nil {
			t.Fatal(err)
		}
	}
	w, err = Open(p, key, Limits{MaxBytes: 2048, Keep: 4}, &head)
	if err != nil {
		t.Fatalf("Open after a rotation interrupted between its renames: %v", err)
	}
	w.Append("x", nil)
	w.Close()
	if _, err := VerifyFiles(p, key, &head); err != nil {
		t.Fatal(err)
	}
}
