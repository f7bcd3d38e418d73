package shim

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/runc/task"
	v2shim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/northstar-oci/northstar/hook/entry"
)

// registerTaskPlugin registers the shim's one "task" ttrpc plugin: runc's
// task service wrapped by ours. runc's own task/plugin package must not be
// linked in as well: two plugins with the same ID panic at registration.
func registerTaskPlugin() {
	plugin.Register(&plugin.Registration{
		Type: plugin.TTRPCPlugin,
		ID:   "task",
		Requires: []plugin.Type{
			plugin.EventPlugin,
			plugin.InternalPlugin,
		},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			restoreGC := deferGCUntilStarted()
			runc, err := task.NewTaskService(ic.Context, pp.(v2shim.Publisher), ss.(shutdown.Service))
			if err != nil {
				restoreGC()
				return nil, err
			}
			return &service{TaskService: runc, restoreGC: restoreGC}, nil
		},
	})
}

// service is runc's task service with the northstar hook added to every
// container it creates. All other calls go to runc's service unchanged.
type service struct {
	taskAPI.TaskService // runc's

	restoreGC func() // ends the start-up GC deferral; idempotent
}

var _ taskAPI.TaskService = (*service)(nil)

// RegisterTTRPC serves this wrapper, not the runc service inside it.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// Create adds the northstar hook to the bundle's config.json, then lets
// runc create the container. If the hook cannot be added the container is
// not created: a container must never start without its secret.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	logger := log.G(ctx).WithField("id", r.ID)
	if err := prepareCreate(r); err != nil {
		s.restoreGC()
		logger.WithError(err).Error("northstar: refusing to create the container")
		return nil, shimError(err)
	}
	resp, err := s.TaskService.Create(ctx, r)
	if err != nil {
		s.restoreGC()
	}
	return resp, err
}

// Start is runc's; the first Start ends the start-up GC deferral, shortly
// after its reply is on its way (restoring GOGC=40 with the start-up heap
// above its goal starts a GC at once: not while the reply is encoded).
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	resp, err := s.TaskService.Start(ctx, r)
	time.AfterFunc(startupGCGrace, s.restoreGC)
	return resp, err
}

// The shim daemon defers garbage collection from plugin set-up until just
// after the first Start (or a failed Create): containerd's shim library sets
// GOGC=40, and the heap of package init alone crosses that goal, so GC
// cycles would run on the critical path of every container start. The
// deferral is bounded in memory (startupHeapLimit) and time
// (startupGCWindow); docs/performance.md has the measurement.
const (
	startupHeapLimit = 64 << 20
	startupGCWindow  = 10 * time.Second
	startupGCGrace   = 50 * time.Millisecond
)

// deferGCUntilStarted turns GC off (within the limits above) and returns
// the function that restores the previous settings; it runs at most once,
// whoever calls it first.
func deferGCUntilStarted() (restore func()) {
	percent := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(-1) // reads it
	if limit > startupHeapLimit {     // never raise a lower GOMEMLIMIT
		debug.SetMemoryLimit(startupHeapLimit)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			debug.SetGCPercent(percent)
			debug.SetMemoryLimit(limit)
		})
	}
	time.AfterFunc(startupGCWindow, restore)
	return restore
}

// prepareCreate makes r ready for runc: runc options it can read, and the
// hook in the bundle.
func prepareCreate(r *taskAPI.CreateTaskRequest) error {
	if err := normalizeOptions(r); err != nil {
		return err
	}
	hp, err := entry.Find()
	if err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	cp, err := configPath()
	if err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	if _, err := injectIntoBundle(r.Bundle, entry.New(hp, cp)); err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	return nil
}
