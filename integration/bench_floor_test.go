// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// againstFloor are the three sides of a hook row, measured side by side:
// `runc run` of a busybox container without a hook (bare), with the
// static Go hook that only reads its state (floor: integration/hookfloor,
// the least any hook written in Go costs) and with northstar's hook.
type againstFloor struct {
	bare, floor, hook []float64
	unsettled         string // settle's note
}

// hookVsFloor is the hook / floor hook pairs, hookVsBare hook / bare.
func (r againstFloor) hookVsFloor() pairs {
	return pairs{a: r.floor, b: r.hook, unsettled: r.unsettled}
}
func (r againstFloor) hookVsBare() pairs { return pairs{a: r.bare, b: r.hook, unsettled: r.unsettled} }

// reportAgainstFloor adds a hook row: the hook / the floor hook, met at
// target, and beside it the hook / a bare start, reported.
func reportAgainstFloor(what string, r againstFloor, target float64, notes ...string) {
	reportRatio(what+" / the Go floor hook", r.hookVsFloor(), target, notes...)
	reportRatioOnly(what+" / bare `runc run`", r.hookVsBare())
}

// benchAgainstFloor times `runc run` of the bundle hooked makes against a
// bare one and one with the floor hook, tightPairs rounds after
// benchWarmup, each round running the three in one of the six orders in
// turn, so that no side always follows the same other.
func benchAgainstFloor(t *testing.T, e *env, hooked func() *bundle) againstFloor {
	t.Helper()
	floorBin := filepath.Join(bins.dir, "hookfloor")
	if err := buildStatic("..", "./integration/hookfloor", floorBin); err != nil {
		t.Fatal(err)
	}
	bare := newBundle(t, e.dir, false, "true")
	bare.write(t)
	floor := newBundle(t, e.dir, false, "true")
	floor.spec.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: floorBin, Args: []string{"hookfloor"}}}}
	floor.write(t)
	hook := hooked()
	hook.write(t)
	bundles := []*bundle{bare, floor, hook}
	orders := [][3]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}, {1, 0, 2}, {0, 2, 1}}
	timeOne := func(b *bundle) float64 {
		start := time.Now()
		if r := b.runcRun(t); r.err != nil {
			t.Fatalf("%s", r)
		}
		return msSince(start)
	}
	unsettled := settle(t)
	for range benchWarmup {
		for _, b := range bundles {
			timeOne(b)
		}
	}
	r := againstFloor{unsettled: unsettled}
	for i := range tightPairs {
		var took [3]float64
		for _, k := range orders[i%len(orders)] {
			took[k] = timeOne(bundles[k])
		}
		r.bare, r.floor, r.hook = append(r.bare, took[0]), append(r.floor, took[1]), append(r.hook, took[2])
	}
	return r
}
