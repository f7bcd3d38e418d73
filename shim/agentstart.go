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
	"github.com/northstar-oci/northstar/lifecycle/rotate"
)

// AgentStart is the wrapper's `start` done by the agent, for the wrapper's
// fast path (package shim/fastpath, which runs before the Go runtime and
// sends req): the same work as Run's, with cfg, the agent's config, and
// prepare, the agent's registry, in place of the control socket. It
// returns the delegate the wrapper becomes.
//
// Not served (false, and why) wherever the Go wrapper would not just give
// the container the agent's mounts: another delegate than the runc shim
// next to containerd (or named by path), a container that needs the hook
// or nothing of the agent, a bundle it cannot read, and the first start
// after containerd restarted, whose rotation seals (the Go wrapper's
// child does that, for as long as the TPM takes). All of it is decided
// before anything changes, so the Go wrapper starts from the bundle as
// containerd wrote it. Served, an error fails the start, on one line with
// its remedy.
func AgentStart(ctx context.Context, cfg *config.Config, req shimstart.Request, prepare func(control.PrepareRequest) (control.PrepareReply, error)) (delegate string, served bool, err error) {
	runtime := runtimeFrom(req.Parent)
	delegate, err = findDelegate(cfg, runtime.exe)
	if err != nil {
		return "", false, err
	}
	switch {
	case filepath.Base(delegate) != runcShim:
		return "", false, fmt.Errorf("[shim] delegate %s is not %s, whose runc writes the init pid the agent binds", delegate, runcShim)
	case !filepath.IsAbs(cfg.Shim.Delegate) && (runtime.exe == "" || filepath.Dir(delegate) != filepath.Dir(runtime.exe)):
		// Found on the agent's PATH, which is not containerd's.
		return "", false, fmt.Errorf("[shim] delegate %s is not next to containerd", delegate)
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
	if cfg.Rotation.On != config.RotateManual {
		if _, err := rotate.IfRuntimeRestarted(ctx, cfg, runtime.pid, noRotation); err != nil {
			return "", false, err
		}
	}
	reply, err := prepare(*plan)
	if err != nil {
		return "", true, errors.New(oneLine(fmt.Errorf("agent: %w", err)))
	}
	out, err := agentmounts.Apply(cfg, doc, plan, reply)
	if err == nil {
		err = entry.WriteBundleConfig(req.Bundle, out, perm)
	}
	if err != nil {
		return "", true, errors.New(oneLine(err))
	}
	return delegate, true, nil
}

// errRotationDue: the stored secret is not this containerd's lifecycle's.
var errRotationDue = errors.New("containerd restarted: the Go wrapper starts the new secret lifecycle")

// noRotation is the rotation of a start the agent serves: none, the start
// is the Go wrapper's.
func noRotation(context.Context, string) (rotate.Result, error) {
	return rotate.Result{}, errRotationDue
}
