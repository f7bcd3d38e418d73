// SPDX-License-Identifier: Apache-2.0

// Package agentmounts puts the secret into a container with no hook, for
// the wrappers that edit a container's config.json before the runtime
// reads it (the containerd shim, northstar-runtime): the agent builds the
// container's secret filesystem and API directory now, and the runtime
// bind-mounts them (runc's own mount code: the destination resolved
// inside the rootfs, /proc refused); the agent binds the registration
// when runc has created the container and written its init pid to the
// bundle (control.InitPidFile; agent/registry). The hook stays where that
// is not safe or not possible: WhyHook, and the caller's own check of its
// runtime (IntoBundle puts one or the other into config.json). What runc checks and what the agent still checks:
// docs/security.md, "Without a hook: the shim".
package agentmounts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/delivery"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/secretfs"
)

// WhyHook says why a container of spec needs the hook rather than the
// agent's mounts ("": it does not). The caller has checked its runtime:
// one that writes the container's init pid to control.InitPidFile in the
// bundle at create.
func WhyHook(cfg *config.Config, spec *specs.Spec) string {
	if cfg.Agent.Socket == "" {
		return "no agent ([agent] socket)"
	}
	if spec.Linux != nil {
		if p := spec.Linux.RootfsPropagation; p == "shared" || p == "rshared" {
			// A mount below a shared root propagates to the host.
			return "the root filesystem's propagation is " + p
		}
	}
	mntNS := false
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			switch {
			case ns.Type == specs.UserNamespace:
				// The secret's owner is mapped through the container's
				// uid_map, which exists once it is created.
				return "a user namespace"
			case ns.Type == specs.MountNamespace && ns.Path != "":
				return "it joins an existing mount namespace"
			case ns.Type == specs.MountNamespace:
				mntNS = true
			case ns.Type == specs.PIDNamespace && ns.Path != "":
				// Who else is in it is checked against the process
				// (checkPIDShare) before the container starts.
				return "it joins an existing PID namespace"
			}
		}
	}
	if !mntNS {
		return "no mount namespace of its own"
	}
	for _, m := range spec.Mounts {
		if slices.Contains(m.Options, "shared") || slices.Contains(m.Options, "rshared") {
			// A mount of ours below it would propagate to its peers, the
			// host's.
			return "mount " + m.Destination + " propagates (shared)"
		}
	}
	return ""
}

// PrepareRequest is what the agent is asked to build for container id of
// spec, decided as the hook decides it (package hook's policy); nil when
// the agent has nothing to build (the container opted out of the secret
// and the API, or live rotation is off): the hook decides then.
func PrepareRequest(cfg *config.Config, spec *specs.Spec, id, bundle string) (*control.PrepareRequest, error) {
	policy, err := delivery.PolicyFor(spec, cfg.SecretMode())
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if policy.Skip {
		return nil, nil
	}
	if err := delivery.CheckIdentityNamespace(spec, cfg.API.IdentityAnyNamespace); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	apiOff, err := delivery.APIDisabled(spec)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	req := &control.PrepareRequest{ID: id, Bundle: bundle, API: cfg.API.Enable && !apiOff, Pod: delivery.PodFor(spec)}
	if !policy.Disabled {
		if !cfg.Rotation.Live {
			return nil, nil
		}
		req.Secret = &control.Owner{UID: policy.UID, GID: policy.GID, Mode: uint32(policy.Mode)}
	}
	if req.Secret == nil && !req.API {
		return nil, nil
	}
	if req.Identity, err = delivery.IdentityFor(spec, id); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return req, nil
}

// Plan decides what the agent is asked to prepare for container id of doc
// (data, its config.json as read) in bundle: nil when the container needs
// the hook (WhyHook, PrepareRequest).
func Plan(cfg *config.Config, data []byte, doc *entry.Config, id, bundle string) (*control.PrepareRequest, error) {
	if why := WhyHook(cfg, &doc.Spec); why != "" {
		return nil, nil
	}
	req, err := PrepareRequest(cfg, &doc.Spec, id, bundle)
	if err != nil || req == nil {
		return nil, err
	}
	if cfg.Measure.Enable && req.Secret != nil {
		// The container's configuration as the engine wrote it (the
		// hook measures what it reads: that plus the hook's entry).
		sum := sha256.Sum256(data)
		req.Measure = &control.Measurement{Config: hex.EncodeToString(sum[:])}
	}
	return req, nil
}

// Apply returns doc's config.json with the bind mounts of what the agent
// prepared for req (reply) and, with the API, its environment.
func Apply(cfg *config.Config, doc *entry.Config, req *control.PrepareRequest, reply control.PrepareReply) ([]byte, error) {
	var mounts []specs.Mount
	if reply.SecretDir != "" {
		mounts = append(mounts, specs.Mount{Destination: secretfs.Dir, Type: "bind", Source: reply.SecretDir, Options: secretfs.BindOptions()})
	}
	if reply.APIDir != "" {
		mounts = append(mounts, specs.Mount{Destination: secretfs.APIDir, Type: "bind", Source: reply.APIDir, Options: secretfs.BindOptions()})
	}
	var env []string
	if req.API {
		env = entry.APIEnv(cfg.SPIFFE.TrustDomain)
	}
	return doc.WithMounts(mounts, env...)
}

// Config has the agent prepare container id of doc (data, its config.json
// as read) in bundle, and returns config.json with its mounts and the
// API's environment; nil when the container needs the hook (Plan, no
// agent listening: then noAgent is told the one line to log).
func Config(ctx context.Context, cfg *config.Config, data []byte, doc *entry.Config, id, bundle string, noAgent func(string)) ([]byte, error) {
	req, err := Plan(cfg, data, doc, id, bundle)
	if err != nil || req == nil {
		return nil, err
	}
	reply, err := control.Prepare(ctx, cfg.Agent.Socket, *req)
	if errors.Is(err, control.ErrNoAgent) {
		// The hook copes without the agent as it always has (the TPM,
		// or a refusal naming the agent for an API container).
		noAgent(fmt.Sprintf("northstar: %v; the hook delivers the secret", err))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent at %s: %w", cfg.Agent.Socket, err)
	}
	return Apply(cfg, doc, req, reply)
}

// IntoBundle readies the config.json of container id in bundle before the
// runtime reads it: the agent's mounts (Config) where initPid says the
// caller's runtime writes the init pid to control.InitPidFile in the
// bundle (the caller's check of its runtime), else the northstar hook.
// noAgent is Config's.
func IntoBundle(ctx context.Context, cfg *config.Config, bundle, id string, initPid bool, noAgent func(string)) error {
	data, perm, err := entry.ReadBundleConfig(bundle)
	if err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	if initPid && id != "" && filepath.IsAbs(bundle) {
		doc, err := entry.ParseConfig(data)
		if err != nil {
			return err
		}
		out, err := Config(ctx, cfg, data, doc, id, filepath.Clean(bundle), noAgent)
		if err != nil {
			return err
		}
		if out != nil {
			return entry.WriteBundleConfig(bundle, out, perm)
		}
	}
	hookPath, err := entry.Find()
	if err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	if _, err := entry.InjectInto(bundle, data, perm, entry.New(hookPath, cfg.Path), entry.APIEnv(cfg.SPIFFE.TrustDomain)...); err != nil {
		return fmt.Errorf("inject hook: %w", err)
	}
	return nil
}
