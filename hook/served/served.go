// SPDX-License-Identifier: Apache-2.0

// Package served is the hook's work served by the agent: the starts of
// northstar-agent-hook (control.Starter), run by package hook's Start in
// the agent's process with the agent's config, registering with its
// registry directly. northstarctl hands it to the agent (agent.Options):
// the agent does not import the hook.
package served

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/control/hookstart"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook"
	"github.com/northstar-oci/northstar/remedy"
	"github.com/northstar-oci/northstar/store"
)

// starts serves the starts of northstar-agent-hook whole: the hook's
// work, package hook's Start, done in the agent's process with the
// agent's config, registering with the registry directly. The hook's
// process only reads its state and asks; see docs/performance.md for
// what that saves on every start.
//
// It runs what the hook runs, in the runtime's namespaces as the hook
// does (the control socket serves only peers of the agent's own mount
// namespace and user), so every check of the hook holds as it is: the
// policy, the revocations, the hostile-image checks of the mount's
// target (taken on a locked thread that joins the container's mount
// namespace and dies with its goroutine, internal/nsenter).
type starts struct {
	reg    *registry.Containers
	secret control.Source // the agent's held secret
	cfg    *config.Config
	pinned *config.Pinned // cfg.Path as it was when the agent started
}

// New serves starts with reg and the agent's held secret, deciding them
// with cfg, the config the agent was started with, and logs to log why it
// serves none (config.Pinned). Without a config file (defaults) it serves
// none.
func New(reg *registry.Containers, secret control.Source, cfg *config.Config, log io.Writer) (control.Starter, error) {
	pinned, err := config.Pin(cfg.Path, log)
	if err != nil {
		return nil, err
	}
	return &starts{reg: reg, secret: secret, cfg: cfg, pinned: pinned}, nil
}

func (s *starts) ServeStart(ctx context.Context, req hookstart.Request) (bool, error) {
	// Another config than the agent's, or the agent's changed since it
	// started: the hook decides the start from the file as it is now.
	if err := s.pinned.Check(req.Config, "the hook"); err != nil {
		return false, err
	}
	in, err := hook.ReadInput(req.State)
	if err != nil {
		return true, err
	}
	if req.Parent == in.State.Pid {
		// createContainer: the hook runs inside the container, whose mount
		// namespace the agent does not serve.
		return false, errors.New("the hook runs inside the container")
	}
	return true, remedy.Explain(hook.Start(ctx, s.cfg, in, inAgent{s}))
}

// inAgent is the hook's Agent inside the agent: the registry and the
// held secret themselves.
type inAgent struct{ s *starts }

func (a inAgent) Register(ctx context.Context, id, identity string, pid int, req control.Request) (control.Reply, error) {
	pidfd, start, err := control.OpenProcess(pid)
	if err != nil {
		return control.Reply{}, err
	}
	defer pidfd.Close()
	req.Registration = control.Registration{ID: id, Identity: identity, Pid: pid, Start: start}
	return a.s.reg.Register(req, pidfd)
}

func (a inAgent) Current(ctx context.Context, st *store.Store) (*os.File, error) {
	memfd, id, err := a.s.secret()
	if err != nil {
		return nil, err
	}
	if err := control.CheckCurrent(st, id); err != nil {
		memfd.Close()
		return nil, err
	}
	return memfd, nil
}
