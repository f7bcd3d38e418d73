// SPDX-License-Identifier: Apache-2.0

//go:build integration && bench

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The rows of DESIGN.md §7 for the agent under a hostile neighbour, with
// the agent as shipped ([api] defaults) unless a row says otherwise.

// TestBenchNeighbourFlood: a victim container's identity round trips, p99,
// while a neighbour holds 500 stalled connections, floods its socket with
// requests and fills its memory of used tokens, against the same victim
// alone. Target: at most 5 × the p99 alone, no failure.
func TestBenchNeighbourFlood(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	v := newVictim(t, e)
	parse := func(out string) (p50, p99, failures int) {
		fmt.Sscanf(out, "p50=%d p99=%d failures=%d", &p50, &p99, &failures)
		return
	}
	const n = 2000
	v.server.sh(t, "nsapi rtt 200") // warm-up
	_, alone, _ := parse(v.server.sh(t, fmt.Sprintf("nsapi rtt %d 200", n)))
	root := filepath.Join(e.dir, "runc-neighbour")
	apiBundle(t, e, "mallory", "nsapi hold 500 600 > /out 2>&1").runDetached(t, root, "mallory-hold").waitOut(t, "holding=", 10*time.Second)
	apiBundle(t, e, "mallory", "nsapi flood /v1/identity 10000000 > /out 2>&1").runDetached(t, root, "mallory-flood")
	apiBundle(t, e, "mallory", "while :; do nsapi flood-verify 100000 3600; done > /out 2>&1").runDetached(t, root, "mallory-verify")
	time.Sleep(time.Second)
	out := v.server.sh(t, fmt.Sprintf("nsapi rtt %d 200", n))
	_, flooded, failures := parse(out)
	ratio := float64(flooded) / float64(alone)
	report("a neighbour flooding its own socket (500 stalled connections, requests at full speed, its replay memory filling): the victim's identity round trip p99",
		fmt.Sprintf("**%.2f×** (p99 %d µs vs %d µs alone, %d round trips each), %d failures", ratio, flooded, alone, n, failures),
		"≤ 5×, 0 failures", ratio <= 5 && failures == 0)
}

// TestBenchAgentRestart: an agent restarted with 1,000 registered
// containers and a full audit history (keep × max_bytes, the defaults:
// 4 × 8 MiB) until a new container's API is served. Target: 2 s.
func TestBenchAgentRestart(t *testing.T) {
	requires(t, "runc", "sleep")
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)
	registerMany(t, sock, 1000)
	a.stop(t)
	fillAuditHistory(t, e)
	served, files := timeRestart(t, e, sock)
	report(fmt.Sprintf("agent restart with 1,000 registered containers and a full audit history (%d files of %d MiB) until a new container's API is served", files, e.cfg.Audit.MaxBytes>>20),
		fmt.Sprintf("%v", served.Round(time.Millisecond)), "≤ 2 s", served <= 2*time.Second)
}

// TestBenchReplayFillRSS: the agent's RSS once a neighbour has filled all
// its memory of used tokens can take (its own audience, its sender's
// share: [api] max_used_tokens_per_sender, 16,384 by default), with
// hour-long tokens. The rate is raised for this row so that the fill
// takes seconds, not the minute the default rate would make it.
// Target: 64 MiB.
func TestBenchReplayFillRSS(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnvWith(t, "rate = 100000\nburst = 100000\n")
	a := startAgent(t, e, sock)
	got := in(t, e, "mallory", "nsapi flood-verify 17000 3600")
	if !strings.HasPrefix(got, "valid=16384 ") {
		t.Errorf("the neighbour's fill: %s, want 16384 valid (its share)", got)
	}
	rss := rssMiB(t, a.cmd.Process.Pid)
	report("agent RSS after a neighbour filled its memory of used tokens (16,384 hour-long tokens)", fmt.Sprintf("%.1f MiB (%s)", rss, got), "≤ 64 MiB", rss <= 64)
}
