// SPDX-License-Identifier: Apache-2.0

// Package audit keeps the agent's tamper-evident log (DESIGN.md §10): one
// JSON object per line, each carrying the hex SHA-256 of the line before it
// ("prev") and an HMAC-SHA256 of itself under an audit key ("mac"), which
// the agent keeps sealed like the secret and across rotations, so the
// whole history verifies.
//
// What is detected without trusting the file: an edited line (its MAC), a
// removed, inserted or reordered line (the chain and the sequence numbers),
// and a rewritten tail (no MAC without the key). What is not: cutting lines
// off the end, which leaves a valid shorter log; that is detected only
// against a recorded Head (line count and last hash), which package store
// keeps with the sealed record at each rotation of the secret (read with
// Tail, which needs no key).
//
// The file rotates by size (Limits): audit.log becomes audit.log.1, and so
// on up to Limits.Keep old files; the oldest beyond that is deleted. The
// chain runs across files (sequence numbers and prev hashes continue), so
// VerifyFiles checks them as one log, and a deleted middle file breaks it;
// the oldest file present may start mid-chain: that is pruning, by design.
//
// Never log a secret, a token or a key here: events name tokens by their
// id (token.Claims.ID).
//
// chain.go is the format and its verification, with the reads that need
// no key (Tail, LineHash); log.go is the writer and its rotation. The
// package stands beside agent/, not in it: the agent writes the log, but
// store records its head at every rotation of the secret (in the shim and
// northstarctl, with no agent running) and northstarctl verifies it, so
// under agent/ the store would import a part of the daemon.
package audit

import (
	"bufio"
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
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Entry is one event. Fields holds the event's details (identity,
// generation, audience, app, token id, reason...), never secrets.
type Entry struct {
	Seq    uint64            `json:"seq"`
	Time   time.Time         `json:"time"`
	Event  string            `json:"event"`
	Fields map[string]string `json:"fields,omitempty"`
	Prev   string            `json:"prev"`
}

// Head is where a log ended: the number of lines and the hash of the last.
// Lines counts the whole chain (it is the last line's seq), across rotated
// files.
type Head struct {
	Lines uint64 `json:"lines"`
	Hash  string `json:"hash"` // hex SHA-256 of the last line; "" for an empty log
}

// FileName is the log's name in the state directory; rotated files add
// ".1" (the newest) to ".<Keep>" (the oldest).
const FileName = "audit.log"

// macLen is the length of how every line ends: ,"mac":"<64 hex>"}
const macLen = len(`,"mac":""}`) + 2*sha256.Size

// line encodes e and its MAC under key as one line (no newline).
func line(key []byte, e *Entry) ([]byte, error) {
	return appendLine(nil, hmac.New(sha256.New, key), e), nil
}

// appendLine appends e and its MAC by m (an HMAC-SHA256 under the audit
// key, reset here) to b, as one line without the newline.
func appendLine(b []byte, m hash.Hash, e *Entry) []byte {
	start := len(b)
	b = appendEntry(b, e)
	m.Reset()
	m.Write(b[start:])
	b = append(b[:len(b)-1], `,"mac":"`...)
	var sum [sha256.Size]byte
	b = hex.AppendEncode(b, m.Sum(sum[:0]))
	return append(b, `"}`...)
}

// appendEntry appends e exactly as json.Marshal encodes it (FuzzEntry
// checks that against json.Marshal), without reflection: encoding the
// fields map through reflection was most of an audit line's cost, and
// every token round trip writes one.
func appendEntry(b []byte, e *Entry) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = appendString(b, e.Event)
	if len(e.Fields) > 0 {
		b = append(b, `,"fields":{`...)
		for i, k := range slices.Sorted(maps.Keys(e.Fields)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, e.Fields[k])
		}
		b = append(b, '}')
	}
	b = append(b, `,"prev":`...)
	b = appendString(b, e.Prev)
	return append(b, '}')
}

// appendString appends s as a JSON string. Identities, apps, ids and
// hashes are printable ASCII that needs no escaping, and are copied as
// they are; anything else goes through encoding/json, so its escaping
// rules (HTML characters, U+2028, invalid UTF-8) stay the library's.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func hashOf(l []byte) string {
	h := sha256.Sum256(l)
	return hex.EncodeToString(h[:])
}

// check returns what is wrong with line l, number n, after prev; "" if
// nothing.
func check(l, key []byte, prev Head, n uint64) (*Entry, string) {
	if len(l) < macLen+2 || !bytes.HasSuffix(l, []byte(`"}`)) || !bytes.Equal(l[len(l)-macLen:len(l)-macLen+8], []byte(`,"mac":"`)) {
		return nil, "no MAC"
	}
	got, err := hex.DecodeString(string(l[len(l)-macLen+8 : len(l)-2]))
	if err != nil {
		return nil, "no MAC"
	}
	body := append(bytes.Clone(l[:len(l)-macLen]), '}')
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return nil, "MAC does not verify (edited, or written without the audit key)"
	}
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, "not an audit entry: " + strings.TrimPrefix(err.Error(), "json: ")
	}
	switch {
	case e.Seq != n:
		return nil, fmt.Sprintf("sequence number %d, want %d (a line removed or moved)", e.Seq, n)
	case e.Prev != prev.Hash:
		return nil, "does not follow the line before it (a line removed, inserted or edited)"
	}
	return &e, ""
}

// verifier checks lines in order, across files.
type verifier struct {
	key   []byte
	want  *Head
	from  *Head // a checkpoint: lines up to it were verified before
	head  Head
	first uint64 // seq of the first line seen; 0 before it
	// resumed: the line of from was found, and verifying goes on after it.
	resumed bool
}

// read checks every line of r (a file called name). mayStartMid (a rotated
// file) allows the first line of the whole log to continue a chain whose
// start was pruned.
func (v *verifier) read(r io.Reader, name string, mayStartMid bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ln uint64
	for sc.Scan() {
		l := sc.Bytes()
		ln++
		if v.from != nil && !v.resumed {
			// Before the checkpoint: only a recorded head is looked at,
			// keyless, as it was recorded.
			seq, ok := seqOf(l)
			if !ok || seq > v.from.Lines {
				return errCheckpointMissed
			}
			h := hashOf(l)
			if v.want != nil && seq == v.want.Lines && h != v.want.Hash {
				return &BadLineError{File: name, Line: ln, Why: fmt.Sprintf("entry %d differs from the recorded head (the log was cut and written on)", seq), Err: ErrHeadMismatch}
			}
			if seq == v.from.Lines {
				if h != v.from.Hash {
					return errCheckpointMissed
				}
				v.head, v.first, v.resumed = *v.from, seq, true
			}
			continue
		}
		if v.first == 0 {
			// The first line of the log: take its place in the chain from
			// itself; its MAC (checked below) vouches for it.
			var e struct {
				Seq  uint64 `json:"seq"`
				Prev string `json:"prev"`
			}
			if json.Unmarshal(l, &e) == nil && e.Seq > 1 {
				v.head = Head{Lines: e.Seq - 1, Hash: e.Prev}
			}
		}
		n := v.head.Lines + 1
		_, why := check(l, v.key, v.head, n)
		if why != "" {
			return &BadLineError{File: name, Line: ln, Why: why}
		}
		if v.first == 0 {
			if n > 1 && !mayStartMid {
				return &BadLineError{File: name, Line: ln, Why: fmt.Sprintf("starts at entry %d, but no older rotated file holds the entries before it (deleted?)", n)}
			}
			if v.want != nil && v.want.Lines == n-1 && v.want.Hash != v.head.Hash {
				return &BadLineError{File: name, Line: ln, Why: "does not follow the recorded head", Err: ErrHeadMismatch}
			}
			v.first = n
		}
		h := hashOf(l)
		if v.want != nil && n == v.want.Lines && h != v.want.Hash {
			return &BadLineError{File: name, Line: ln, Why: fmt.Sprintf("entry %d differs from the recorded head (the log was cut and written on)", n), Err: ErrHeadMismatch}
		}
		v.head = Head{Lines: n, Hash: h}
	}
	if err := sc.Err(); err != nil {
		return &BadLineError{File: name, Line: ln + 1, Why: err.Error()}
	}
	return nil
}

// end checks the whole log against the recorded head.
func (v *verifier) end() error {
	if v.want != nil && v.head.Lines < v.want.Lines {
		return fmt.Errorf("%w: %d lines, the head recorded %d", ErrTruncated, v.head.Lines, v.want.Lines)
	}
	return nil
}

// BadLineError names the first line that does not verify: its file (""
// when Verify read a stream) and its line number in that file, 1-based.
type BadLineError struct {
	File string
	Line uint64
	Why  string
	Err  error // ErrHeadMismatch when the line is where the recorded head is not
}

func (e *BadLineError) Unwrap() error { return e.Err }

func (e *BadLineError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Why)
	}
	return fmt.Sprintf("%s line %d: %s", e.File, e.Line, e.Why)
}

// ErrTruncated: the log is shorter than, or ends elsewhere than, a
// recorded head.
var ErrTruncated = errors.New("the log ends before its recorded head")

// ErrMissingFile: a rotated file between the oldest present and the
// current one is gone, and the chain breaks there.
var ErrMissingFile = errors.New("a rotated audit file is missing")

// ErrHeadMismatch: the log does not pass through its recorded head (it was
// cut and written on, or replaced).
var ErrHeadMismatch = errors.New("the log differs from its recorded head")

// Verify reads a whole log from r and checks every line's MAC, the chain of
// hashes and the sequence numbers (the first line must be the chain's
// first); with want non-nil, also that the log reaches want (a recorded
// head). It returns where the log ends.
func Verify(r io.Reader, key []byte, want *Head) (Head, error) {
	v := verifier{key: key, want: want}
	if err := v.read(r, "", false); err != nil {
		return v.head, err
	}
	return v.head, v.end()
}

// Result is what VerifyFiles found.
type Result struct {
	Head  Head
	First uint64   // seq of the first line present; > 1 when rotation pruned older files
	Files []string // the files read, oldest first (base names)
	Size  int64    // of the current file, as read
}

// VerifyFiles checks the log at path and its rotated files (path.K, the
// oldest, ... path.1, then path) as one chain, like Verify. The oldest
// file may start mid-chain only if it is a rotated file (older ones were
// pruned, by design: deleting the oldest files cannot be told from that).
// A gap in the numbers is no error by itself (a rotation interrupted
// between its renames leaves one, with the chain intact); where the chain
// breaks after a gap, the error is ErrMissingFile. Nothing at all is an
// error wrapping fs.ErrNotExist.
func VerifyFiles(path string, key []byte, want *Head) (Result, error) {
	return verifyFiles(path, key, want, nil)
}

// errCheckpointMissed: the line a checkpoint names is not in the files as
// it was when the checkpoint was made; the caller verifies everything.
var errCheckpointMissed = errors.New("the checkpoint's line is not in the log")

// verifyFiles is VerifyFiles; with from (a checkpoint: a line verified
// before, with the key), the lines up to from are only hashed where they
// are a recorded head, not verified again.
func verifyFiles(path string, key []byte, want, from *Head) (Result, error) {
	files, err := listFiles(path)
	if err != nil {
		return Result{}, err
	}
	return verifyList(path, files, key, want, from)
}

// file is one file of a log, oldest first, as verifyList reads it.
type file struct {
	name    string
	missing string   // the files numbered between it and the one before, if gone
	f       *os.File // opened already (a snapshot, VerifyHistory); nil: open name
	size    int64    // with f: read this much of it
}

// listFiles returns the files of the log at path, oldest first.
func listFiles(path string) ([]file, error) {
	ks, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	gap := func(newer, older int) string { // names path.newer+1 .. path.older-1
		switch {
		case older-newer < 2:
			return ""
		case older-newer == 2:
			return filepath.Base(rotated(path, newer+1))
		}
		return filepath.Base(rotated(path, newer+1)) + " to " + filepath.Base(rotated(path, older-1))
	}
	var files []file
	for i := len(ks) - 1; i >= 0; i-- {
		f := file{name: rotated(path, ks[i])}
		if i < len(ks)-1 {
			f.missing = gap(ks[i], ks[i+1])
		}
		files = append(files, f)
	}
	if _, err := os.Stat(path); err == nil || len(files) == 0 {
		f := file{name: path}
		if len(ks) > 0 {
			f.missing = gap(0, ks[0])
		}
		files = append(files, f)
	}
	return files, nil
}

// verifyList verifies files, the log at path, as one chain (see
// verifyFiles).
func verifyList(path string, files []file, key []byte, want, from *Head) (Result, error) {
	var res Result
	if from != nil {
		// Start in the file that holds from: the last one starting at or
		// before it. None does when rotation pruned it: verify them all.
		start := -1
		for i, fl := range files {
			if first, err := firstSeq(fl.name); err == nil && first <= from.Lines {
				start = i
			}
		}
		if start < 0 {
			from = nil
		} else {
			files = files[start:]
			files[0].missing = ""
		}
	}
	v := verifier{key: key, want: want, from: from}
	for _, fl := range files {
		f := fl.f
		var r io.Reader = f
		if f == nil {
			var err error
			if f, err = os.Open(fl.name); err != nil {
				return res, err
			}
			defer f.Close()
			r = f
		} else {
			r = io.NewSectionReader(f, 0, fl.size)
		}
		err := v.read(r, filepath.Base(fl.name), fl.name != path)
		if fl.name == path {
			if fi, serr := f.Stat(); serr == nil {
				res.Size = fi.Size()
			}
		}
		res.Files = append(res.Files, filepath.Base(fl.name))
		res.Head, res.First = v.head, v.first
		var bad *BadLineError
		if fl.missing != "" && errors.As(err, &bad) && bad.Line == 1 {
			return res, fmt.Errorf("%w: %s is gone and the chain breaks there: %w", ErrMissingFile, fl.missing, err)
		}
		if err != nil {
			return res, err
		}
	}
	if from != nil && !v.resumed {
		return res, errCheckpointMissed
	}
	return res, v.end()
}

// Files lists the log at path and its rotated files that exist, newest
// first.
func Files(path string) ([]string, error) {
	ks, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	var out []string
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	for _, k := range ks {
		out = append(out, rotated(path, k))
	}
	return out, nil
}

// LineHash returns the hash of entry n of the log at path (across its
// rotated files) without the key: what a recorded head names. A caller
// recording a new head checks with it that the log still passes through
// the old one.
func LineHash(path string, n uint64) (string, error) {
	names, err := Files(path)
	if err != nil {
		return "", err
	}
	// Newest first: a recorded head is near the end.
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			return "", err
		}
		h, found, err := lineHashIn(f, n)
		f.Close()
		if err != nil || found {
			return h, err
		}
	}
	if len(names) > 0 {
		if first, err := firstSeq(names[len(names)-1]); err == nil && n < first {
			return "", fmt.Errorf("entry %d: %w (the oldest kept is %d)", n, ErrPruned, first)
		}
	}
	return "", fmt.Errorf("entry %d is in no file of %s", n, path)
}

// ErrPruned: LineHash was asked for an entry older than every file kept,
// removed by rotation ([audit] keep).
var ErrPruned = errors.New("pruned by rotation")

// firstSeq returns the seq of the first line of the file at path.
func firstSeq(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return 0, fmt.Errorf("%s: no line", path)
	}
	n, ok := seqOf(sc.Bytes())
	if !ok {
		return 0, fmt.Errorf("%s: first line has no seq", path)
	}
	return n, nil
}

// lineHashIn scans r for the line of entry n. found is false when the file
// starts after n or ends before it.
func lineHashIn(r io.Reader, n uint64) (hash string, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		seq, ok := seqOf(sc.Bytes())
		switch {
		case !ok:
			continue
		case seq > n:
			return "", false, nil
		case seq == n:
			return hashOf(sc.Bytes()), true, nil
		}
	}
	return "", false, sc.Err()
}

// seqOf reads the seq a line starts with ({"seq":N,...), as every line
// written here does.
func seqOf(l []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(l, []byte(`{"seq":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return n, err == nil
}

// rotatedFiles returns the k of every path.k present (k >= 1, no leading
// zeros), ascending.
func rotatedFiles(path string) ([]int, error) {
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(path) + "."
	var ks []int
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || suffix == "" || suffix[0] == '0' {
			continue
		}
		if k, err := strconv.Atoi(suffix); err == nil && k > 0 {
			ks = append(ks, k)
		}
	}
	sort.Ints(ks)
	return ks, nil
}

// tailWindow is how much of the file's end Tail reads: many lines (they
// are a few hundred bytes), so the last complete one is always inside.
const tailWindow = 64 << 10

// Tail returns the head of the log at path without the key: the seq and
// hash of the last complete line, read from the file's last 64 KiB. It
// fsyncs the file first, so the head it returns is on disk (the agent
// syncs only every 100 ms) before a caller records it. An empty or missing
// path falls back to path.1 (the file just rotated away); a log that is
// not there at all is Head{} and no error.
//
// A last line without its newline is ignored, not an error: it may be an
// append in progress (a reader can see part of a write), and if it stays
// partial Verify reports it. Nothing is verified here, so a forged tail
// gives a head that Verify will reject with the key: recording it loses
// nothing.
func Tail(path string) (Head, error) {
	for _, p := range []string{path, rotated(path, 1)} {
		h, err := tailOf(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Head{}, err
		}
		if h.Lines > 0 {
			return h, nil
		}
	}
	return Head{}, nil
}

func tailOf(path string) (Head, error) {
	f, err := os.Open(path)
	if err != nil {
		return Head{}, err
	}
	defer f.Close()
	// fsync works on a read-only descriptor: it flushes the file, not
	// this descriptor's writes.
	if err := f.Sync(); err != nil {
		return Head{}, fmt.Errorf("sync %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return Head{}, err
	}
	off := max(fi.Size()-tailWindow, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return Head{}, fmt.Errorf("read %s: %w", path, err)
	}
	h, err := lastEntry(buf[:n], off == 0)
	if err != nil {
		return Head{}, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// lastEntry returns the head of the last complete line in buf, the end of
// a log; whole says buf starts at the start of the file.
func lastEntry(buf []byte, whole bool) (Head, error) {
	end := bytes.LastIndexByte(buf, '\n')
	if end < 0 {
		if whole {
			return Head{}, nil // no complete line yet
		}
		return Head{}, errors.New("no line ends in the last 64 KiB")
	}
	start := bytes.LastIndexByte(buf[:end], '\n') + 1
	if start == 0 && !whole {
		return Head{}, errors.New("the last line is longer than 64 KiB")
	}
	l := buf[start:end]
	var e struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(l, &e); err != nil || e.Seq == 0 {
		return Head{}, errors.New("the last line is not an audit entry")
	}
	return Head{Lines: e.Seq, Hash: hashOf(l)}, nil
}
