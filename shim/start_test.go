// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/config/configtest"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/ctl/ctltest"
	"github.com/northstar-oci/northstar/lifecycle"
)

// hostConfig writes a host-sealer config and points NORTHSTAR_CONFIG at it.
func hostConfig(t testing.TB, extra string) *config.Config {
	t.Helper()
	cfg := configtest.Host(t, extra)
	t.Setenv(config.EnvConfig, cfg.Path)
	return cfg
}

func generation(t testing.TB, cfg *config.Config) (uint64, string) {
	t.Helper()
	st, err := configured.Store(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	return rec.Generation, rec.LifecycleID
}

// TestRotateIfRuntimeRestarted: the first start makes the secret, starts
// under the same runtime change nothing, a start under another runtime
// rotates; each by the real northstarctl code in a child.
func TestRotateIfRuntimeRestarted(t *testing.T) {
	ctx := context.Background()
	cfg := hostConfig(t, "")
	ctltest.Install(t)
	runtimeA, runtimeB := os.Getpid(), os.Getppid()

	// No secret yet: the first shim makes generation 1.
	if err := rotateIfRuntimeRestarted(ctx, cfg, runtimeA); err != nil {
		t.Fatal(err)
	}
	gen, id := generation(t, cfg)
	wantID, _ := lifecycle.ID(runtimeA)
	if gen != 1 || id != wantID {
		t.Fatalf("generation %d lifecycle %q, want 1 %q", gen, id, wantID)
	}
	// Same runtime: nothing happens.
	if err := rotateIfRuntimeRestarted(ctx, cfg, runtimeA); err != nil {
		t.Fatal(err)
	}
	if gen, _ := generation(t, cfg); gen != 1 {
		t.Fatalf("same runtime rotated: generation %d", gen)
	}
	// Another runtime process: one rotation.
	if err := rotateIfRuntimeRestarted(ctx, cfg, runtimeB); err != nil {
		t.Fatal(err)
	}
	if gen, _ := generation(t, cfg); gen != 2 {
		t.Fatalf("restarted runtime: generation %d, want 2", gen)
	}
}

func TestRotateManual(t *testing.T) {
	ctx := context.Background()
	cfg := hostConfig(t, "[rotation]\non = \"manual\"\n")
	st, _ := configured.Store(cfg)
	if _, _, err := st.Init(ctx, "made-by-init"); err != nil {
		t.Fatal(err)
	}
	if err := rotateIfRuntimeRestarted(ctx, cfg, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if gen, id := generation(t, cfg); gen != 1 || id != "made-by-init" {
		t.Errorf("manual rotation policy rotated: generation %d, lifecycle %q", gen, id)
	}
}

func TestRotateErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("missing config", func(t *testing.T) {
		t.Setenv(config.EnvConfig, filepath.Join(t.TempDir(), "nope.toml"))
		_, err := loadConfig()
		if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), config.EnvConfig) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("runtime process gone", func(t *testing.T) {
		cfg := hostConfig(t, "")
		if err := rotateIfRuntimeRestarted(ctx, cfg, 1<<30); err == nil || !strings.Contains(err.Error(), "lifecycle id") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestShimErrorIsOneLine(t *testing.T) {
	err := shimError(fmt.Errorf("rotate lifecycle secret: %w", errors.New("tpm says\nno\n  really")))
	if want := "northstar shim: rotate lifecycle secret: tpm says; no; really"; err.Error() != want {
		t.Errorf("shimError = %q, want %q", err, want)
	}
}
