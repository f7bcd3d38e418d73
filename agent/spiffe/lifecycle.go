// SPDX-License-Identifier: Apache-2.0

package spiffe

import "sync"

// Lifecycle is what a Server needs to know of the lifecycle secret's
// rotations: the generation in force, and a channel that is closed at the
// next rotation. One call returns both, so that a rotation between
// reading the generation and waiting on the channel is never missed.
type Lifecycle interface {
	Generation() (gen uint64, rotated <-chan struct{})
}

// Generations is the Lifecycle the agent keeps: Set at every rotation
// wakes every stream waiting on the channel of the generation before.
// Safe for concurrent use.
type Generations struct {
	mu      sync.Mutex // guards gen, rotated
	gen     uint64
	rotated chan struct{}
}

var _ Lifecycle = (*Generations)(nil)

// NewGenerations starts at gen.
func NewGenerations(gen uint64) *Generations {
	return &Generations{gen: gen, rotated: make(chan struct{})}
}

// Generation implements Lifecycle.
func (g *Generations) Generation() (uint64, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen, g.rotated
}

// Set records a rotation to gen (a repeated gen is not a rotation).
func (g *Generations) Set(gen uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gen == g.gen {
		return
	}
	g.gen = gen
	close(g.rotated)
	g.rotated = make(chan struct{})
}
