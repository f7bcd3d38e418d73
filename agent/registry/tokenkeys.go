// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"sync"
	"time"
)

// tokenKeys caches the HMAC keys of the generations whose tokens are
// verified, derived once each: a derivation was a fifth of a token's
// time, and left the root key in HKDF's garbage each time. A key unused
// for longer than a token lives is zeroed and dropped (no token of its
// generation can still be alive then, or it would have been verified);
// at most maxTokenKeys are kept, so tokens that name many generations (a
// container sending forged ones) cost derivations, never memory.
type tokenKeys struct {
	derive func(generation uint64) []byte

	mu   sync.Mutex // guards keys
	keys map[uint64]*tokenKey
}

type tokenKey struct {
	k    []byte
	used time.Time
}

const maxTokenKeys = 4

func (t *tokenKeys) get(g uint64) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil {
		t.keys = map[uint64]*tokenKey{}
	}
	if k, ok := t.keys[g]; ok {
		k.used = time.Now()
		return k.k
	}
	if len(t.keys) >= maxTokenKeys {
		var oldest uint64
		for gen, k := range t.keys {
			if oldest == 0 || k.used.Before(t.keys[oldest].used) {
				oldest = gen
			}
		}
		// Not zeroed: a request may still be using it. Dropped, it is
		// garbage like a derivation's own.
		delete(t.keys, oldest)
	}
	k := &tokenKey{k: t.derive(g), used: time.Now()}
	t.keys[g] = k
	return k.k
}

// sweep zeroes and drops the keys unused for longer than ttl.
func (t *tokenKeys) sweep(ttl time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for g, k := range t.keys {
		if time.Since(k.used) > ttl {
			clear(k.k)
			delete(t.keys, g)
		}
	}
}

func (t *tokenKeys) zero() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for g, k := range t.keys {
		clear(k.k)
		delete(t.keys, g)
	}
}
