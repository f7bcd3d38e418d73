package shim

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestDeferGCUntilStarted(t *testing.T) {
	oldPercent := debug.SetGCPercent(40)
	oldLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	})

	restore := deferGCUntilStarted()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Errorf("GC percent %d during start-up, want -1 (off)", p)
	}
	if l := debug.SetMemoryLimit(-1); l != startupHeapLimit {
		t.Errorf("memory limit %d during start-up, want %d", l, startupHeapLimit)
	}
	restore()
	if p := debug.SetGCPercent(40); p != 40 {
		t.Errorf("GC percent %d after restore, want 40", p)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d after restore, want unlimited", l)
	}
	// Idempotent: a second call (the timer, another Start) changes nothing.
	debug.SetGCPercent(55)
	restore()
	if p := debug.SetGCPercent(40); p != 55 {
		t.Errorf("second restore reset GC percent to %d", p)
	}

	// A lower GOMEMLIMIT is never raised.
	debug.SetMemoryLimit(8 << 20)
	restore = deferGCUntilStarted()
	if l := debug.SetMemoryLimit(-1); l != 8<<20 {
		t.Errorf("memory limit %d during start-up, want the lower 8 MiB kept", l)
	}
	restore()
}
