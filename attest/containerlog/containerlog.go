// SPDX-License-Identifier: Apache-2.0

// Package containerlog is the format of northstar's measured-container log
// (DESIGN.md §17, docs/attestation.md): a TCG Canonical Event Log (CEL,
// TCG_IWG_CEL_v1_r0p37) whose records name an NV index of type
// TPM_NT_EXTEND as their measurement register, and its replay.
//
// Two content types of northstar's own carry what the log says:
//
//   - ContentContainer (0xE0): one delivery of the secret to a container.
//     Its value is a list of TLVs: 1 the container id, 2 its identity,
//     3 how it was delivered ("hook", "nri" or "shim"), 4 the SHA-256 of its OCI
//     configuration (see docs: what is hashed depends on the path), 5 its
//     rootfs identity, 6 the time (Unix nanoseconds, big-endian uint64).
//   - ContentBatch (0xE1): the end of a batch: its value is the
//     concatenated SHA-256 digests of the container records since the
//     batch before.
//
// Each record's digest is the SHA-256 of its content TLV (type, length,
// value), as go-eventlog's own content types do. Only batch records are
// extended into the NV index (new = SHA-256(old || digest)): the agent
// extends once a batch, off the containers' start path, and a container
// record reaches the TPM through the batch that lists its digest. Replay
// checks the record numbers run 0, 1, 2, ... (no record dropped or
// reordered), that every digest is its content's, that every batch lists
// exactly the records before it, and folds the batches.
//
// go-eventlog v0.0.2's cel package encodes TLVs (used here) but refuses
// NV-index records when decoding a log, so records are read here.
package containerlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/go-eventlog/cel"
)

// Content types of northstar's records (CEL leaves values above the
// spec's own to the log's writer).
const (
	ContentContainer uint8 = 0xE0
	ContentBatch     uint8 = 0xE1
)

// CEL's top-level types and the NV-index register type.
const (
	typeRecnum   uint8 = 0
	typeNVIndex  uint8 = 2 // CEL_PCR_NVINDEX: an NV index (TPMI_RH_NV_INDEX)
	typeDigests  uint8 = 3
	algSHA256    uint8 = 0x0b // TPM_ALG_SHA256, the type of a digest TLV
	maxValueSize       = 64 << 10
)

// Fields of a container record.
const (
	fieldID uint8 = iota + 1
	fieldIdentity
	fieldVia
	fieldConfig
	fieldRootfs
	fieldTime
)

// Event is one delivery of the secret to a container.
type Event struct {
	ID       string // the OCI container id
	Identity string // who it speaks as
	Via      string // "hook" (the OCI hook's registration), "nri" or "shim"
	// Config is the SHA-256 of the container's OCI configuration: of the
	// bundle's config.json bytes (hook), of the NRI container's canonical
	// fields (nri; docs/attestation.md).
	Config [sha256.Size]byte
	// Rootfs names the container's root filesystem (docs/attestation.md).
	Rootfs string
	Time   time.Time
}

// Record is one CEL record.
type Record struct {
	Num     uint64
	Index   uint32 // the NV index
	Digest  [sha256.Size]byte
	Content cel.TLV
}

// Container returns the container record of e.
func Container(num uint64, index uint32, e Event) Record {
	var v []byte
	v = appendTLV(v, fieldID, []byte(e.ID))
	v = appendTLV(v, fieldIdentity, []byte(e.Identity))
	v = appendTLV(v, fieldVia, []byte(e.Via))
	v = appendTLV(v, fieldConfig, e.Config[:])
	v = appendTLV(v, fieldRootfs, []byte(e.Rootfs))
	v = appendTLV(v, fieldTime, binary.BigEndian.AppendUint64(nil, uint64(e.Time.UnixNano())))
	return newRecord(num, index, cel.TLV{Type: ContentContainer, Value: v})
}

// Batch returns the batch record listing digests.
func Batch(num uint64, index uint32, digests [][sha256.Size]byte) Record {
	v := make([]byte, 0, len(digests)*sha256.Size)
	for _, d := range digests {
		v = append(v, d[:]...)
	}
	return newRecord(num, index, cel.TLV{Type: ContentBatch, Value: v})
}

func newRecord(num uint64, index uint32, content cel.TLV) Record {
	return Record{Num: num, Index: index, Digest: digestOf(content), Content: content}
}

func digestOf(t cel.TLV) [sha256.Size]byte {
	b, _ := t.MarshalBinary() // never fails
	return sha256.Sum256(b)
}

func appendTLV(b []byte, typ uint8, v []byte) []byte {
	t, _ := cel.TLV{Type: typ, Value: v}.MarshalBinary()
	return append(b, t...)
}

// MarshalBinary encodes r as a CEL record: recnum, NV index, digests,
// content.
func (r Record) MarshalBinary() ([]byte, error) {
	var b []byte
	b = appendTLV(b, typeRecnum, binary.BigEndian.AppendUint64(nil, r.Num))
	b = appendTLV(b, typeNVIndex, binary.BigEndian.AppendUint32(nil, r.Index))
	b = appendTLV(b, typeDigests, appendTLV(nil, algSHA256, r.Digest[:]))
	c, err := r.Content.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return append(b, c...), nil
}

// Parse decodes a log. A log cut short in its last record returns the
// whole records before it with ErrTruncated (a writer that died mid-record).
func Parse(b []byte) ([]Record, error) {
	var recs []Record
	for len(b) > 0 {
		r, n, err := parseRecord(b)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return recs, fmt.Errorf("record %d: %w", len(recs), ErrTruncated)
			}
			return recs, fmt.Errorf("record %d: %w", len(recs), err)
		}
		recs = append(recs, r)
		b = b[n:]
	}
	return recs, nil
}

// ErrTruncated: the log ends inside a record.
var ErrTruncated = errors.New("the log ends inside a record")

func parseRecord(b []byte) (Record, int, error) {
	var r Record
	off := 0
	next := func(want uint8) ([]byte, error) {
		t, v, n, err := readTLV(b[off:])
		if err != nil {
			return nil, err
		}
		if t != want {
			return nil, fmt.Errorf("a TLV of type %d where CEL has %d", t, want)
		}
		off += n
		return v, nil
	}
	v, err := next(typeRecnum)
	if err != nil {
		return r, 0, err
	}
	if len(v) != 8 {
		return r, 0, errors.New("a record number is not 8 bytes")
	}
	r.Num = binary.BigEndian.Uint64(v)
	if v, err = next(typeNVIndex); err != nil {
		return r, 0, fmt.Errorf("%w (a record of this log names an NV index)", err)
	}
	if len(v) != 4 {
		return r, 0, errors.New("an NV index is not 4 bytes")
	}
	r.Index = binary.BigEndian.Uint32(v)
	if v, err = next(typeDigests); err != nil {
		return r, 0, err
	}
	t, d, n, err := readTLV(v)
	if err != nil {
		return r, 0, err
	}
	if t != algSHA256 || len(d) != sha256.Size || n != len(v) {
		return r, 0, errors.New("the digests are not one SHA-256")
	}
	copy(r.Digest[:], d)
	t, c, n, err := readTLV(b[off:])
	if err != nil {
		return r, 0, err
	}
	r.Content = cel.TLV{Type: t, Value: c}
	return r, off + n, nil
}

func readTLV(b []byte) (typ uint8, v []byte, n int, err error) {
	if len(b) < 5 {
		return 0, nil, 0, io.ErrUnexpectedEOF
	}
	l := binary.BigEndian.Uint32(b[1:5])
	if l > maxValueSize {
		return 0, nil, 0, fmt.Errorf("a TLV of %d bytes, more than %d", l, maxValueSize)
	}
	if uint32(len(b)-5) < l {
		return 0, nil, 0, io.ErrUnexpectedEOF
	}
	return b[0], b[5 : 5+l], 5 + int(l), nil
}

// Event decodes a container record's content.
func (r Record) Event() (Event, error) {
	var e Event
	if r.Content.Type != ContentContainer {
		return e, fmt.Errorf("content type %#x is not a container", r.Content.Type)
	}
	for v := r.Content.Value; len(v) > 0; {
		t, f, n, err := readTLV(v)
		if err != nil {
			return e, err
		}
		switch t {
		case fieldID:
			e.ID = string(f)
		case fieldIdentity:
			e.Identity = string(f)
		case fieldVia:
			e.Via = string(f)
		case fieldConfig:
			if len(f) != sha256.Size {
				return e, errors.New("the config digest is not a SHA-256")
			}
			copy(e.Config[:], f)
		case fieldRootfs:
			e.Rootfs = string(f)
		case fieldTime:
			if len(f) != 8 {
				return e, errors.New("the time is not 8 bytes")
			}
			e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(f))).UTC()
		default:
			return e, fmt.Errorf("unknown field %d", t)
		}
		v = v[n:]
	}
	return e, nil
}

// Replayed is what a log shows.
type Replayed struct {
	// Value is the NV index's value once every batch is extended
	// (all zeros: no batch yet).
	Value [sha256.Size]byte
	// Batches counts the batch records; Extended is the record count up
	// to and including the last batch.
	Batches, Extended int
	// Events are the container records covered by a batch, in order.
	Events []Event
	// Pending are the container records after the last batch (not in the
	// TPM yet).
	Pending []Event
}

// ErrReplay: the log is not one the writer could have written.
var ErrReplay = errors.New("the log does not replay")

// Replay checks recs against index (record numbers 0, 1, 2..., digests,
// batches) and folds the batches into the value the NV index holds.
func Replay(recs []Record, index uint32) (*Replayed, error) {
	return ReplayFrom(recs, index, 0, [sha256.Size]byte{})
}

// ReplayFrom is Replay of a log's tail: recs start at record first, after
// a batch, when the index held from (zero for first 0). A tail proves as
// much as the whole log of what it shows: each extend folds the value
// before it, so no other value and tail reach the same end (SHA-256 is
// collision resistant); it shows nothing of the records before it.
func ReplayFrom(recs []Record, index uint32, first uint64, from [sha256.Size]byte) (*Replayed, error) {
	var (
		out     = Replayed{Value: from}
		batch   [][sha256.Size]byte
		pending []Event
	)
	if (first == 0) != (from == [sha256.Size]byte{}) {
		return nil, fmt.Errorf("%w: the log starts at record %d, the index's value before it is %x", ErrReplay, first, from[:8])
	}
	for i, r := range recs {
		num := first + uint64(i)
		fail := func(format string, a ...any) (*Replayed, error) {
			return nil, fmt.Errorf("%w: record %d: %s", ErrReplay, num, fmt.Sprintf(format, a...))
		}
		switch {
		case r.Num != num:
			return fail("numbered %d (a record before it was dropped, or records were reordered)", r.Num)
		case r.Index != index:
			return fail("names NV index %#x, not %#x", r.Index, index)
		case digestOf(r.Content) != r.Digest:
			return fail("its digest is not its content's (the record was edited)")
		}
		switch r.Content.Type {
		case ContentContainer:
			e, err := r.Event()
			if err != nil {
				return fail("%v", err)
			}
			batch, pending = append(batch, r.Digest), append(pending, e)
		case ContentBatch:
			want := Batch(0, 0, batch).Content.Value
			if !bytes.Equal(r.Content.Value, want) {
				return fail("the batch does not list the %d container records before it (one was dropped, added or edited)", len(batch))
			}
			out.Value = Extend(out.Value, r.Digest)
			out.Batches++
			out.Extended = i + 1
			out.Events = append(out.Events, pending...)
			batch, pending = nil, nil
		default:
			return fail("content type %#x is not northstar's", r.Content.Type)
		}
	}
	out.Pending = pending
	return &out, nil
}

// Encode encodes recs as a log.
func Encode(recs []Record) []byte {
	var b []byte
	for _, r := range recs {
		rb, _ := r.MarshalBinary()
		b = append(b, rb...)
	}
	return b
}

// Extend is the NV extend of an index holding old with digest: what the
// TPM computes for TPM2_NV_Extend on a SHA-256 extend index.
func Extend(old, digest [sha256.Size]byte) [sha256.Size]byte {
	return sha256.Sum256(append(old[:], digest[:]...))
}

// Prefix returns how many of recs replay to value: the records up to and
// including the batch after which the index held value. A log read while
// its writer appends has records past that batch.
func Prefix(recs []Record, index uint32, value [sha256.Size]byte) (int, error) {
	rp, err := Replay(recs, index)
	if err != nil {
		return 0, err
	}
	var v [sha256.Size]byte
	if v == value {
		return 0, nil
	}
	for i, r := range recs[:rp.Extended] {
		if r.Content.Type != ContentBatch {
			continue
		}
		if v = Extend(v, r.Digest); v == value {
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("%w: no batch of it leaves the index with the value it holds (the log was replaced, or the index extended by someone else)", ErrReplay)
}

// Tail returns the start of the shortest tail of recs[:n] (n from Prefix)
// that begins after a batch (or at 0) and encodes in at most max bytes —
// or, when no tail fits, of the last batch's records alone — with the
// index's value before it: what evidence of a bounded size carries of a
// log that grows with every container.
func Tail(recs []Record, n, max int) (start int, from [sha256.Size]byte) {
	start = -1
	size := 0
	for i := n - 1; i >= 0; i-- {
		b, _ := recs[i].MarshalBinary()
		size += len(b)
		boundary := i == 0 || recs[i-1].Content.Type == ContentBatch
		if boundary && (start < 0 || size <= max) {
			start = i
		}
		if size > max && start >= 0 {
			break
		}
	}
	start = max0(start)
	for _, r := range recs[:start] {
		if r.Content.Type == ContentBatch {
			from = Extend(from, r.Digest)
		}
	}
	return start, from
}

func max0(i int) int {
	if i < 0 {
		return 0
	}
	return i
}
