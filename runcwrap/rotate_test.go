// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/northstar-oci/northstar/config/configtest"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/ctl/ctltest"
	"github.com/northstar-oci/northstar/lifecycle"
)

func TestMain(m *testing.M) {
	ctltest.Main() // the wrapper's rotation child
	os.Exit(m.Run())
}

// TestRotateIfEngineRestarted: the first start adopts (or makes) the
// secret for the engine; starts under the same engine change nothing;
// under another engine process, many starts at once rotate exactly once;
// the record names that engine's lifecycle. northstarctl (the real code,
// in this test binary) rotates.
func TestRotateIfEngineRestarted(t *testing.T) {
	ctx := context.Background()
	cfg := configtest.Host(t, "")
	ctltest.Install(t)
	st, err := configured.Store(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gen := func() (uint64, string) {
		t.Helper()
		rec, err := st.Current()
		if err != nil {
			t.Fatal(err)
		}
		return rec.Generation, rec.LifecycleID
	}
	a, b := engine{pid: os.Getpid(), how: "a"}, engine{pid: os.Getppid(), how: "b"}
	for range 2 {
		if err := rotateIfEngineRestarted(ctx, cfg, a, invocation{}); err != nil {
			t.Fatal(err)
		}
	}
	idA, _ := lifecycle.ID(a.pid)
	if g, id := gen(); g != 1 || id != idA {
		t.Fatalf("after starts under engine a: generation %d lifecycle %q, want 1 %q", g, id, idA)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- rotateIfEngineRestarted(ctx, cfg, b, invocation{}) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	idB, _ := lifecycle.ID(b.pid)
	if g, id := gen(); g != 2 || id != idB {
		t.Errorf("after 8 starts under engine b: generation %d lifecycle %q, want exactly one rotation to %q", g, id, idB)
	}
	if err := rotateIfEngineRestarted(ctx, cfg, engine{pid: 1 << 30, how: "gone"}, invocation{}); err == nil {
		t.Error("an engine that is gone: no error")
	}
}

// TestRotateFailsClosedWithoutNorthstarctl: a rotation that is due and no
// northstarctl to seal it fails the start, in one line naming what to
// install; a start whose record is the engine's needs none.
func TestRotateFailsClosedWithoutNorthstarctl(t *testing.T) {
	ctx := context.Background()
	cfg := configtest.Host(t, "")
	ctltest.Install(t)
	e := engine{pid: os.Getpid(), how: "parent process containerd"}
	if err := rotateIfEngineRestarted(ctx, cfg, e, invocation{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	if err := rotateIfEngineRestarted(ctx, cfg, e, invocation{}); err != nil {
		t.Errorf("the engine's own record, no northstarctl: %v", err)
	}
	err := rotateIfEngineRestarted(ctx, cfg, engine{pid: os.Getppid(), how: "parent process containerd"}, invocation{})
	want := "the parent process containerd: rotate lifecycle secret: northstarctl is neither next to"
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("a rotation without northstarctl: %v, want one line starting %q", err, want)
	}
}
