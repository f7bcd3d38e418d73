// SPDX-License-Identifier: Apache-2.0

// Package served is the containerd shim's `start` served by the agent:
// the requests of the wrapper's fast path (control.ShimStarter), run by
// package shim's AgentStart in the agent's process with the agent's
// config, preparing with its registry directly. northstarctl hands it to
// the agent (agent.Options): the agent does not import the shim.
package served

import (
	"context"
	"io"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/shim"
)

type starts struct {
	reg    *registry.Containers
	cfg    *config.Config
	pinned *config.Pinned // cfg.Path as it was when the agent started
}

// New serves shim starts with reg, deciding them with cfg, the config the
// agent was started with, and logs to log why it serves none
// (config.Pinned). Without a config file (defaults) it serves none.
func New(reg *registry.Containers, cfg *config.Config, log io.Writer) (control.ShimStarter, error) {
	pinned, err := config.Pin(cfg.Path, log)
	if err != nil {
		return nil, err
	}
	return &starts{reg: reg, cfg: cfg, pinned: pinned}, nil
}

func (s *starts) ServeShimStart(ctx context.Context, req shimstart.Request) (string, bool, error) {
	// Another config than the agent's, or the agent's changed since it
	// started: the wrapper decides the start from the file as it is now.
	if err := s.pinned.Check(req.Config, "the shim"); err != nil {
		return "", false, err
	}
	return shim.AgentStart(ctx, s.cfg, req, s.reg.PrepareBundle)
}
