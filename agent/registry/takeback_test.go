// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/live"
	"github.com/northstar-oci/northstar/secretfs/mount"
)

// TestRestartDoesNotWaitForAHungMountTree: containers whose mount tree
// hangs (a FUSE mount at /run that never answers) do not hold up a
// restarted agent: it serves within takeBackWait however many there are
// (before, reacquireTimeout each, one after the other), the take-backs
// run a few at a time, and repeated restarts leave no goroutine behind
// once the hung calls return.
func TestRestartDoesNotWaitForAHungMountTree(t *testing.T) {
	c, sec := liveRegistry(t, time.Hour)
	const n = 6
	for i := range n {
		deliver(t, c, "hung-"+string(rune('a'+i)))
	}
	dir, st := c.dir, c.store
	c.Close()

	var (
		mu             sync.Mutex
		release        chan struct{} // closed when the hung calls return
		inFlight, most int
	)
	reacquireFS = func(int, uint64, mount.Owner) (*live.FS, error) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		r := release
		mu.Unlock()
		<-r
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil, errors.New("hung")
	}
	defer func() { reacquireFS = live.Reacquire }()
	gen := func() uint64 { sec.mu.Lock(); defer sec.mu.Unlock(); return sec.id.Generation }
	before := runtime.NumGoroutine()
	for round := range 3 {
		mu.Lock()
		release = make(chan struct{})
		mu.Unlock()
		start := time.Now()
		c2, err := Open(context.Background(), Options{Store: st, Dir: dir, Live: true, Secret: sec, Grace: time.Hour}, gen)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > takeBackWait+time.Second {
			t.Errorf("round %d: the restart took %v with %d hung containers, want about %v", round, took, n, takeBackWait)
		}
		if got := len(c2.byKey); got != n {
			t.Errorf("round %d: %d containers served, want %d", round, got, n)
		}
		// The hung calls return (the FUSE server answers at last).
		mu.Lock()
		close(release)
		mu.Unlock()
		c2.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if most > takeBackWorkers {
		t.Errorf("%d take-backs at once, want at most %d", most, takeBackWorkers)
	}
	time.Sleep(100 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Errorf("goroutines: %d before three restarts, %d after", before, after)
	}
}
