// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/agentmounts"
	"github.com/northstar-oci/northstar/hook/entry"
)

// AgentStart is the wrapper's `start` done by the agent, for the wrapper's
// fast path (package shim/fastpath, which runs before the Go runtime and
// sends req): the same work as Run's, with cfg, the agent's config, and
// prepare, the agent's registry, in place of the control socket. It
// returns the delegate the wrapper becomes.
//
// Not served (false, and why) where the Go wrapper would not give the
// container the agent's mounts (another delegate than the runc shim, a
// container that needs the hook, one that opted out) or would fail
// before changing anything (no delegate, an unreadable bundle): the
// wrapper then does the start itself, and says so. Decided before the
// lifecycle check, so that a start not served has changed nothing.
// Served, an error fails the start, on one line with its remedy.
func AgentStart(ctx context.Context, cfg *config.Config, req shimstart.Request, prepare func(control.PrepareRequest) (control.PrepareReply, error)) (delegate string, served bool, err error) {
	runtime := runtimeFrom(req.Parent)
	delegate, err = findDelegate(cfg, runtime.exe)
	if err != nil {
		return "", false, err
	}
	if filepath.Base(delegate) != runcShim {
		return "", false, fmt.Errorf("[shim] delegate %s is not %s, whose runc writes the init pid the agent binds", delegate, runcShim)
	}
	data, perm, err := entry.ReadBundleConfig(req.Bundle)
	if err != nil {
		return "", false, err
	}
	doc, err := entry.ParseConfig(data)
	if err != nil {
		return "", false, err
	}
	plan, err := agentmounts.Plan(cfg, data, doc, req.ID, req.Bundle)
	if err != nil {
		return "", false, err
	}
	if plan == nil {
		return "", false, errors.New("the container needs the hook, or nothing of the agent")
	}
	fail := func(err error) (string, bool, error) { return "", true, errors.New(oneLine(err)) }
	if err := rotateLogged(ctx, cfg, runtime.pid, req.Bundle); err != nil {
		return fail(err)
	}
	reply, err := prepare(*plan)
	if err != nil {
		return fail(fmt.Errorf("agent: %w", err))
	}
	out, err := agentmounts.Apply(cfg, doc, plan, reply)
	if err != nil {
		return fail(err)
	}
	if err := entry.WriteBundleConfig(req.Bundle, out, perm); err != nil {
		return fail(err)
	}
	return delegate, true, nil
}
