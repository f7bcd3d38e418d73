package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	v2shim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
)

// manager is runc's shim manager plus the lifecycle check: `start` is the
// one shim action whose parent is containerd itself, so it is where a
// restarted containerd is noticed.
type manager struct {
	v2shim.Manager // runc's: starts and stops the shim daemon
}

var _ v2shim.Manager = manager{}

// Start rotates the lifecycle secret if containerd restarted since it was
// made, then lets runc's manager start (or reuse) the shim daemon. A
// failed rotation fails the start: containerd shows the error, and no
// container of this lifecycle runs with the previous lifecycle's secret.
func (m manager) Start(ctx context.Context, id string, opts v2shim.StartOpts) (string, error) {
	ctx, closeLog := startLogger(ctx, opts.Debug)
	defer closeLog()
	if err := rotateIfRuntimeRestarted(ctx, os.Getppid()); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Error("northstar: refusing to start the shim")
		return "", shimError(err)
	}
	return m.Manager.Start(ctx, id, opts)
}

// rotateIfRuntimeRestarted starts a new secret lifecycle when the runtime
// process runtimePid is not the one the stored secret was made for. Many
// shims starting at once rotate exactly once: the store decides under its
// lock.
func rotateIfRuntimeRestarted(ctx context.Context, runtimePid int) error {
	path, err := configPath()
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("config %s does not exist: create it, or set %s in containerd's environment", path, config.EnvConfig)
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if cfg.Rotation.On == config.RotateManual {
		return nil
	}
	id, err := lifecycleID(runtimePid)
	if err != nil {
		return fmt.Errorf("lifecycle id: %w", err)
	}
	st, err := configured.Store(cfg)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	rec, rotated, err := st.RotateIfLifecycleChanged(ctx, id)
	if err != nil {
		return fmt.Errorf("rotate lifecycle secret: %w", err)
	}
	if rotated {
		log.G(ctx).WithFields(log.Fields{
			"generation":   rec.Generation,
			"lifecycle_id": rec.LifecycleID,
			"config":       path,
		}).Info("northstar: runtime restarted, new lifecycle secret")
	}
	return nil
}

// startLogger returns a context whose logger writes to the shim log pipe
// containerd opened in the bundle directory (the working directory of
// `start`). Never stdout or stderr: containerd reads the shim address from
// their combined output, so one stray log line there breaks the start.
func startLogger(ctx context.Context, debug bool) (context.Context, func()) {
	l := logrus.New()
	l.SetFormatter(&logrus.TextFormatter{TimestampFormat: log.RFC3339NanoFixed, FullTimestamp: true})
	if debug {
		l.SetLevel(logrus.DebugLevel)
	}
	closeFn := func() {}
	// O_NONBLOCK: fail with ENXIO instead of hanging when nobody reads
	// the pipe (start run by hand); Go's poller then waits on writes.
	if f, err := os.OpenFile("log", os.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
			l.SetOutput(f)
		} else {
			l.SetOutput(io.Discard)
		}
		closeFn = func() { f.Close() }
	} else {
		l.SetOutput(io.Discard)
	}
	entry := logrus.NewEntry(l).WithField("runtime", RuntimeName)
	return log.WithLogger(ctx, entry), closeFn
}
