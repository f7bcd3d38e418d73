// SPDX-License-Identifier: Apache-2.0

package rotate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/config/configtest"
	"github.com/northstar-oci/northstar/lifecycle"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/store"
)

// TestIfRuntimeRestarted: a record of this runtime's lifecycle is read
// and nothing runs; any other state of the store is the rotator's, with
// the runtime's lifecycle id, and its answer becomes the line logged.
func TestIfRuntimeRestarted(t *testing.T) {
	ctx := context.Background()
	cfg := configtest.Host(t, "")
	st := store.New(cfg.StateDir, seal.NewHost(filepath.Join(cfg.StateDir, seal.HostKeyFile)))
	var calls []string
	answer := Result{Change: store.Adopted, Generation: 1}
	rotator := func(ctx context.Context, id string) (Result, error) {
		calls = append(calls, id)
		rec, change, err := st.RotateIfLifecycleChanged(ctx, id)
		if err != nil {
			return Result{}, err
		}
		if answer.Change != change || answer.Generation != rec.Generation {
			t.Errorf("the store did %v to generation %d, the test expects %+v", change, rec.Generation, answer)
		}
		return Result{Change: change, Generation: rec.Generation}, nil
	}
	if _, _, err := st.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	self, parent := os.Getpid(), os.Getppid()
	idSelf, _ := lifecycle.ID(self)
	idParent, _ := lifecycle.ID(parent)

	note, err := IfRuntimeRestarted(ctx, cfg, self, rotator)
	want := fmt.Sprintf("northstar: secret generation=1 adopted for this runtime lifecycle lifecycle_id=%q config=%q", idSelf, cfg.Path)
	if err != nil || note != want {
		t.Fatalf("first start: %q, %v; want %q", note, err, want)
	}
	for range 3 {
		if note, err := IfRuntimeRestarted(ctx, cfg, self, rotator); err != nil || note != "" {
			t.Fatalf("same runtime: %q, %v", note, err)
		}
	}
	if len(calls) != 1 {
		t.Fatalf("rotator ran %d times for one runtime, want once (the record answers the rest): %q", len(calls), calls)
	}
	answer = Result{Change: store.Rotated, Generation: 2}
	note, err = IfRuntimeRestarted(ctx, cfg, parent, rotator)
	want = fmt.Sprintf("northstar: runtime restarted, new lifecycle secret generation=2 lifecycle_id=%q config=%q", idParent, cfg.Path)
	if err != nil || note != want {
		t.Fatalf("restarted runtime: %q, %v; want %q", note, err, want)
	}
	if len(calls) != 2 || calls[1] != idParent {
		t.Errorf("rotator calls %q, want the second for %q", calls, idParent)
	}

	failing := func(context.Context, string) (Result, error) {
		return Result{}, errors.New("rotate lifecycle secret: denied")
	}
	if _, err := IfRuntimeRestarted(ctx, cfg, self, failing); err == nil || err.Error() != "rotate lifecycle secret: denied" {
		t.Errorf("a failed rotation: %v, want the rotator's error as it is", err)
	}
	if _, err := IfRuntimeRestarted(ctx, cfg, 1<<30, rotator); err == nil || !strings.HasPrefix(err.Error(), "lifecycle id: ") {
		t.Errorf("a runtime that is gone: %v", err)
	}
}

// TestInChild: the child gets the flag and the id after its argv and the
// extra environment; its report is parsed, its failure is its one line
// without its program's name, and a report that is not one fails.
func TestInChild(t *testing.T) {
	ctx := context.Background()
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script, "northstarctl"} }
	got, err := InChild(sh(`[ "$1 $2 $NS_TEST" = "--rotate-lifecycle boot:x/pid:1/start:2 yes" ] && echo "rotated 8"`), "NS_TEST=yes")(ctx, "boot:x/pid:1/start:2")
	if err != nil || got != (Result{Change: store.Rotated, Generation: 8}) {
		t.Errorf("InChild = %+v, %v; want rotated 8", got, err)
	}
	_, err = InChild(sh(`echo "northstarctl: rotate lifecycle secret: open lock: permission denied" >&2; exit 1`))(ctx, "id")
	if err == nil || err.Error() != "rotate lifecycle secret: open lock: permission denied" {
		t.Errorf("failed child: %v", err)
	}
	if _, err := InChild(sh(`echo "rotated eight"`))(ctx, "id"); err == nil {
		t.Error("a report without a generation accepted")
	}
}

func TestReportParses(t *testing.T) {
	for change := range changeNames {
		var b strings.Builder
		if err := Report(&b, &store.Record{Generation: 42}, change); err != nil {
			t.Fatal(err)
		}
		if got, err := parse(b.String()); err != nil || got != (Result{Change: change, Generation: 42}) {
			t.Errorf("Report %q parsed as %+v, %v", b.String(), got, err)
		}
	}
}

func TestByCtlWithoutCtl(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := ByCtl("/etc/northstar/config.toml")(context.Background(), "id")
	if err == nil || !strings.Contains(err.Error(), "northstarctl is neither next to") || strings.Contains(err.Error(), "\n") {
		t.Errorf("no northstarctl: %v", err)
	}
}
