// SPDX-License-Identifier: Apache-2.0

// Package replay is the agent's memory of the tokens that were used
// (DESIGN.md §9, §11): a token verifies once, so its nonce is remembered
// until the token expires, across agent restarts, audit pruning and full
// disks.
//
// The naive memory is one map of every nonce, capped, and swept by walking
// it when full. Against a hostile neighbour it fails twice (measured,
// DESIGN.md §11): one container that verifies its own hour-long tokens
// fills the one cap in two minutes, after which every other container's
// verification is refused; and each refusal walks the whole map under the
// one lock. So here:
//
//   - Memory is kept per audience (the identity of the socket that
//     verifies): a container filling its own memory refuses only its own
//     verifications. Within an audience each sender has a share of its own,
//     so a sender whose tokens an audience's application verifies on
//     request (a client logging in to an MQTT broker) cannot fill the
//     audience's memory for the other senders.
//   - Entries are in a heap ordered by expiry: pruning what expired costs
//     O(log n) per entry, never a walk, and a full memory names when its
//     oldest entry expires (the Retry-After of the refusal).
//   - Every use is appended to a journal of its own before the answer
//     (Use returns only once the record is written), so a restarted agent
//     knows every token it answered valid, whatever happened to the audit
//     log; a record that cannot be written fails the verification closed.
//     The journal is compacted when most of it has expired.
//
// Identities are kept as 8-byte hashes: the memory holds no names, only
// enough to tell audiences and senders apart.
package replay

import (
	"container/heap"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"
)

// NonceSize is the size of a token's nonce (token.NonceSize).
const NonceSize = 16

// Limits bound the memory. Zero fields take the defaults.
type Limits struct {
	// PerAudience is how many unexpired used tokens one audience's memory
	// holds; a verification beyond it is refused with a *FullError.
	PerAudience int
	// PerSender is how many of those one sender's tokens may take.
	PerSender int
}

// Defaults. An entry costs about 130 bytes of the agent's memory, so a
// container that fills its own audience's memory costs the agent about
// 8.5 MiB; at the default token lifetime (60 s) 65,536 is more than 1,000
// verifications a second, sustained, for one audience.
const (
	DefaultPerAudience = 1 << 16
	DefaultPerSender   = 1 << 14
)

func (l Limits) withDefaults() Limits {
	if l.PerAudience <= 0 {
		l.PerAudience = DefaultPerAudience
	}
	if l.PerSender <= 0 {
		l.PerSender = DefaultPerSender
	}
	return l
}

// ErrReplayed: the token was used before.
var ErrReplayed = errors.New("token used before")

// FullError: the audience's memory, or the sender's share of it, is full
// of unexpired tokens. Nothing is forgotten to make room: a token that is
// forgotten would verify again.
type FullError struct {
	Audience bool          // the audience's memory (else the sender's share)
	Until    time.Duration // until the oldest entry in the way expires
}

func (e *FullError) Error() string {
	what := "this sender's share of the memory of used tokens"
	if e.Audience {
		what = "the memory of used tokens"
	}
	return fmt.Sprintf("%s is full of unexpired tokens (the oldest expires in %s); try again later", what, e.Until.Round(time.Second))
}

// id is an identity as the memory keeps it.
type id [8]byte

func idOf(identity string) id {
	h := sha256.Sum256([]byte(identity))
	return id(h[:8])
}

// entry is one used token.
type entry struct {
	nonce   [NonceSize]byte
	expiry  int64 // unix seconds
	sender  id
	heapIdx int
}

// audience is the memory of one verifying identity.
type audience struct {
	byNonce map[[NonceSize]byte]*entry
	expiry  expiryHeap
	senders map[id]int // entries per sender
}

// Memory is the memory of used tokens. It is safe for concurrent use.
type Memory struct {
	// Now is the clock (tests set it).
	Now func() time.Time

	lim Limits
	j   *journal // nil: not persisted (tests)

	mu   sync.Mutex // guards byID
	byID map[id]*audience
}

// Open returns the memory persisted in the journal at path (created 0600
// if missing), without the tokens that have expired since.
func Open(path string, lim Limits) (*Memory, error) {
	m := New(lim)
	j, err := openJournal(path, m.Now(), func(r record) { m.insert(r.audience, r.sender, r.nonce, r.expiry) })
	if err != nil {
		return nil, err
	}
	m.j = j
	return m, nil
}

// New returns an empty memory that is not persisted.
func New(lim Limits) *Memory {
	return &Memory{lim: lim.withDefaults(), Now: time.Now, byID: map[id]*audience{}}
}

// Use records that audience verified sender's token with nonce, valid
// until expiry. It returns nil the first time (the record written to the
// journal), ErrReplayed after that, a *FullError when there is no room,
// and any other error when the use could not be recorded: then the token
// must not be answered valid.
func (m *Memory) Use(audienceIdentity, senderIdentity string, nonce [NonceSize]byte, expiry time.Time) error {
	aud, snd := idOf(audienceIdentity), idOf(senderIdentity)
	now := m.Now()
	m.mu.Lock()
	a := m.audienceLocked(aud)
	a.prune(now.Unix())
	if _, used := a.byNonce[nonce]; used {
		m.mu.Unlock()
		return ErrReplayed
	}
	if err := a.room(snd, m.lim, now); err != nil {
		m.mu.Unlock()
		return err
	}
	e := a.add(snd, nonce, expiry.Unix())
	m.mu.Unlock()
	if m.j == nil {
		return nil
	}
	if err := m.j.append(record{audience: aud, sender: snd, nonce: nonce, expiry: e.expiry}, now, m.live); err != nil {
		// Not on disk: after a restart it would verify again. Forget it
		// here too, so that this token is not half used: the caller
		// answers 503 and nothing was said valid. (A concurrent Use of
		// the same nonce meanwhile was refused as replayed: fail closed.)
		m.mu.Lock()
		a.remove(e)
		m.mu.Unlock()
		return fmt.Errorf("record the used token: %w", err)
	}
	return nil
}

// Sweep drops every expired entry, so memory a past flood took is given
// back even to an audience that verifies nothing more. The agent calls
// it now and then.
func (m *Memory) Sweep() {
	now := m.Now().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, a := range m.byID {
		a.prune(now)
		if len(a.byNonce) == 0 {
			delete(m.byID, k)
		}
	}
}

// Len returns how many used tokens are remembered in all.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.byID {
		n += len(a.byNonce)
	}
	return n
}

// Close flushes and closes the journal.
func (m *Memory) Close() error {
	if m.j == nil {
		return nil
	}
	return m.j.close()
}

// live calls each with every unexpired entry: what a compaction keeps.
func (m *Memory) live(now int64, each func(record)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for aud, a := range m.byID {
		for _, e := range a.byNonce {
			if e.expiry > now {
				each(record{audience: aud, sender: e.sender, nonce: e.nonce, expiry: e.expiry})
			}
		}
	}
}

// insert adds an entry read back from the journal (no limits: they held
// when it was written).
func (m *Memory) insert(aud, snd id, nonce [NonceSize]byte, expiry int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.audienceLocked(aud)
	if _, dup := a.byNonce[nonce]; !dup {
		a.add(snd, nonce, expiry)
	}
}

func (m *Memory) audienceLocked(aud id) *audience {
	a := m.byID[aud]
	if a == nil {
		a = &audience{byNonce: map[[NonceSize]byte]*entry{}, senders: map[id]int{}}
		m.byID[aud] = a
	}
	return a
}

// prune drops the entries that expired by now (unix seconds): a token is
// valid strictly before its expiry, so one expiring now can no longer be
// replayed.
func (a *audience) prune(now int64) {
	for len(a.expiry) > 0 && a.expiry[0].expiry <= now {
		a.remove(a.expiry[0])
	}
}

// room reports whether snd may add an entry.
func (a *audience) room(snd id, lim Limits, now time.Time) error {
	if len(a.byNonce) >= lim.PerAudience {
		return &FullError{Audience: true, Until: time.Unix(a.expiry[0].expiry, 0).Sub(now)}
	}
	if a.senders[snd] >= lim.PerSender {
		return &FullError{Until: a.oldestOf(snd).Sub(now)}
	}
	return nil
}

// oldestOf returns when the oldest entry of snd expires. Only on the
// refusal path, when snd's share is full: a scan of the heap's array.
func (a *audience) oldestOf(snd id) time.Time {
	var oldest int64
	for _, e := range a.expiry {
		if e.sender == snd && (oldest == 0 || e.expiry < oldest) {
			oldest = e.expiry
		}
	}
	return time.Unix(oldest, 0)
}

func (a *audience) add(snd id, nonce [NonceSize]byte, expiry int64) *entry {
	e := &entry{nonce: nonce, expiry: expiry, sender: snd}
	a.byNonce[nonce] = e
	heap.Push(&a.expiry, e)
	a.senders[snd]++
	return e
}

func (a *audience) remove(e *entry) {
	if a.byNonce[e.nonce] != e {
		return
	}
	delete(a.byNonce, e.nonce)
	heap.Remove(&a.expiry, e.heapIdx)
	if a.senders[e.sender]--; a.senders[e.sender] <= 0 {
		delete(a.senders, e.sender)
	}
}

// expiryHeap is a min-heap of entries by expiry (container/heap).
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry < h[j].expiry }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
