// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `make demo` (scripts/demo.sh) as the README tells a new
// user to, so that what the README says it shows is kept: the demo checks
// each step itself and exits non-zero when one misbehaves. Beyond its exit
// status the test asserts the steps of the live rotation the README names,
// so that a demo that quietly stops showing one fails here.
func TestDemo(t *testing.T) {
	requires(t, "rootlesskit", "containerd", "ctr", "swtpm", "runc", "busybox")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scripts/demo.sh")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		"is accepted by broker2, started before it (live rotation",
		"accepted during the grace period (secret.previous)",
		"the grace period is over: stale's copy of generation 2 is refused",
		"northstarctl rotate --revoke rogue",
		"rogue's copy of generation 3 is refused",
		"the others carry on",
		"a captured token replayed: refused the second time",
		"demo: every step behaved as described",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(text, "[FAIL]") {
		t.Errorf("a step of the demo failed:\n%s", out)
	}
}
