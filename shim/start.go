// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/agentmounts"
	"github.com/northstar-oci/northstar/lifecycle/rotate"
)

// loadConfig loads the config the shim and its hook use (see configPath).
func loadConfig() (*config.Config, error) {
	path, err := configPath()
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist: create it, or set %s in containerd's environment", path, config.EnvConfig)
		}
		return nil, err
	}
	return cfg, nil
}

// prepareStart readies a new container's bundle before the delegate starts
// its shim: a new secret lifecycle if containerd restarted, and in
// config.json the agent's mounts (mounts.go) or else the hook. A failed
// rotation fails the start: no container of this lifecycle runs with the
// previous lifecycle's secret.
func prepareStart(ctx context.Context, cfg *config.Config, inv invocation, delegate string, runtimePid int) error {
	if err := rotateIfRuntimeRestarted(ctx, cfg, runtimePid); err != nil {
		return err
	}
	return agentmounts.IntoBundle(ctx, cfg, inv.bundle, inv.id, filepath.Base(delegate) == runcShim, logToContainerd)
}

// rotateIfRuntimeRestarted starts a new secret lifecycle when the runtime
// process runtimePid is not the one the stored secret was made for. The
// record says so without the sealer; the rotation runs in northstarctl,
// so the shim, run for every container, links no TPM code. Many shims
// starting at once rotate exactly once: the store decides under its lock.
func rotateIfRuntimeRestarted(ctx context.Context, cfg *config.Config, runtimePid int) error {
	if cfg.Rotation.On == config.RotateManual {
		return nil
	}
	note, err := rotate.IfRuntimeRestarted(ctx, cfg, runtimePid, rotate.ByCtl(cfg.Path))
	if note != "" {
		logToContainerd(note)
	}
	return err
}

// logToContainerd writes one info line to the shim log pipe containerd
// opened in the bundle directory (the working directory of `start`), in
// containerd's logfmt. Never stdout or stderr: containerd reads the shim
// address from their combined output, so one stray line there breaks the
// start. Best effort: without a reader (start run by hand) nothing is
// written.
func logToContainerd(msg string) {
	// O_NONBLOCK: fail with ENXIO instead of hanging when nobody reads.
	f, err := os.OpenFile("log", os.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	fmt.Fprintf(f, "time=%q level=info msg=%q runtime=%s\n", time.Now().Format(time.RFC3339Nano), msg, RuntimeName)
}
