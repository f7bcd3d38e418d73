package shim

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/runc/task"
	v2shim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
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
			runc, err := task.NewTaskService(ic.Context, pp.(v2shim.Publisher), ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			return &service{TaskService: runc}, nil
		},
	})
}

// service is runc's task service with the northstar hook added to every
// container it creates. All other calls go to runc's service unchanged.
type service struct {
	taskAPI.TaskService // runc's
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
		logger.WithError(err).Error("northstar: refusing to create the container")
		return nil, shimError(err)
	}
	return s.TaskService.Create(ctx, r)
}

// prepareCreate makes r ready for runc: runc options it can read, and the
// hook in the bundle.
func prepareCreate(r *taskAPI.CreateTaskRequest) error {
	if err := normalizeOptions(r); err != nil {
		return err
	}
	hp, err := hookPath()
	if err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	cp, err := configPath()
	if err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	if _, err := injectIntoBundle(r.Bundle, Hook(hp, cp)); err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	return nil
}
