// SPDX-License-Identifier: Apache-2.0

package nri

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/containerd/nri/pkg/api"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/identity"
	"github.com/northstar-oci/northstar/secretfs"
)

// Deliverer builds a container's secret filesystem and API directory
// before the container exists, and binds them to its init process once
// the runtime has created it (the agent's registry: registry.Containers).
type Deliverer interface {
	// Prepare returns the host directories the runtime bind-mounts at
	// /run/northstar and /run/northstar/api ("": none).
	// pod names a Kubernetes container's pod (the SPIRE issuer's k8s:
	// selectors).
	Prepare(id, identity string, pod *control.Pod, owner *control.Owner, withAPI bool) (secretDir, apiDir string, err error)
	// Bind checks the runtime's mounts in the created container and
	// registers it with its init process; an error fails its start.
	// prepared is false when it prepared nothing for id.
	Bind(id string, pid int) (prepared bool, err error)
	// Forget drops a container prepared and never bound.
	Forget(id string)
}

// The annotations of the secret's owner and mode (the hook's,
// hook/policy.go; TestAnnotationsAreTheHooks).
const (
	annotationUID  = "io.northstar.secret.uid"
	annotationGID  = "io.northstar.secret.gid"
	annotationMode = "io.northstar.secret.mode"
)

// withMounts is the adjustment of adjust with no hook: the agent builds
// the container's mounts now and the runtime mounts them. ok is false
// when this container needs the hook instead (see usesHook).
func (p *plugin) withMounts(adj *api.ContainerAdjustment, pod *api.PodSandbox, ctr *api.Container, secretOff, apiOff bool) (bool, error) {
	if p.deliver == nil || usesHook(ctr) || (!secretOff && !p.live) {
		return false, nil
	}
	var owner *control.Owner
	if !secretOff {
		o, err := ownerOf(ctr, p.secretMode)
		if err != nil {
			return false, fmt.Errorf("northstar: container %s: %w", ctr.GetName(), err)
		}
		owner = &o
	}
	who, err := identityOf(pod, ctr, p.anyNamespace)
	if err != nil {
		return false, fmt.Errorf("northstar: container %s: %w", ctr.GetName(), err)
	}
	secretDir, apiDir, err := p.deliver.Prepare(ctr.GetId(), who, podOf(pod, ctr), owner, p.apiEnabled && !apiOff)
	if err != nil {
		return false, fmt.Errorf("northstar: container %s: %w", ctr.GetName(), err)
	}
	if secretDir != "" {
		adj.AddMount(&api.Mount{Destination: secretfs.Dir, Type: "bind", Source: secretDir, Options: secretfs.BindOptions()})
	}
	if apiDir != "" {
		adj.AddMount(&api.Mount{Destination: secretfs.APIDir, Type: "bind", Source: apiDir, Options: secretfs.BindOptions()})
	}
	return true, nil
}

// usesHook reports whether the container needs the hook even where the
// agent could hand the runtime its mounts: one with a user namespace of
// its own, whose ids the secret's owner must be mapped through (the hook
// reads the container's uid_map, which exists only once it is created).
func usesHook(ctr *api.Container) bool {
	for _, ns := range ctr.GetLinux().GetNamespaces() {
		if ns.GetType() == "user" {
			return true
		}
	}
	return false
}

// ownerOf is who owns the secret file in the container and its mode: the
// annotations' when set (malformed ones are errors), else the process's
// user and the configured mode, as the hook decides (delivery.PolicyFor).
func ownerOf(ctr *api.Container, mode os.FileMode) (control.Owner, error) {
	o := control.Owner{UID: ctr.GetUser().GetUid(), GID: ctr.GetUser().GetGid(), Mode: uint32(mode)}
	a := ctr.GetAnnotations()
	for key, id := range map[string]*uint32{annotationUID: &o.UID, annotationGID: &o.GID} {
		v, ok := a[key]
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == math.MaxUint32 || len(v) > 10 {
			return o, fmt.Errorf("annotation %s: %q is not a numeric id", key, v)
		}
		*id = uint32(n)
	}
	if v, ok := a[annotationMode]; ok {
		m, err := secretfs.ParseMode(v)
		if err != nil {
			return o, fmt.Errorf("annotation %s: %w", annotationMode, err)
		}
		o.Mode = uint32(m)
	}
	return o, nil
}

// identityOf is whom the container speaks as: io.northstar.identity when
// set, else <namespace>/<pod>/<container>, else its id (delivery.IdentityFor).
// An explicit identity must be in the pod's namespace unless anyNS
// ([api] identity_any_namespace), as the hook checks it
// (delivery.CheckIdentityNamespace): no hook runs here to check it.
func identityOf(pod *api.PodSandbox, ctr *api.Container, anyNS bool) (string, error) {
	if v, ok := ctr.GetAnnotations()[annotationIdentity]; ok {
		if !identity.Valid(v) {
			return "", fmt.Errorf("annotation %s=%q: want 1-253 characters of [A-Za-z0-9._:@/-]", annotationIdentity, v)
		}
		if !anyNS {
			if err := identity.CheckNamespace(v, pod.GetNamespace()); err != nil {
				return "", fmt.Errorf("annotation %s=%w", annotationIdentity, err)
			}
		}
		return v, nil
	}
	if id := pod.GetNamespace() + "/" + pod.GetName() + "/" + ctr.GetName(); pod.GetNamespace() != "" && pod.GetName() != "" && ctr.GetName() != "" && identity.Valid(id) {
		return id, nil
	}
	if !identity.Valid(ctr.GetId()) {
		return "", fmt.Errorf("container id %q is no identity; set %s", ctr.GetId(), annotationIdentity)
	}
	return ctr.GetId(), nil
}

// StartContainer is NRI's event before the runtime starts a created
// container: the agent checks its mounts and registers it. An error
// fails the start (containerd returns it to the kubelet before the
// container's process runs).
func (p *plugin) StartContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	if p.deliver == nil {
		return nil
	}
	if err := p.measure(ctr, int(ctr.GetPid())); err != nil {
		return fmt.Errorf("northstar: container %s: %w", ctr.GetName(), err)
	}
	prepared, err := p.deliver.Bind(ctr.GetId(), int(ctr.GetPid()))
	if err != nil {
		return fmt.Errorf("northstar: %w", err)
	}
	if !prepared {
		// Mounts at /run/northstar that this agent did not prepare: an
		// earlier agent's (it stopped between the container's creation
		// and its start). Nothing would rotate, revoke or serve them.
		for _, m := range ctr.GetMounts() {
			if m.GetDestination() == secretfs.Dir || m.GetDestination() == secretfs.APIDir {
				return fmt.Errorf("northstar: container %s mounts %s, which this agent did not prepare (the agent restarted after the container was created); create the container again", ctr.GetName(), m.GetDestination())
			}
		}
	}
	return nil
}

// RemoveContainer is NRI's event after a container is removed: one that
// was prepared and never started leaves nothing behind.
func (p *plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	if p.deliver != nil {
		p.deliver.Forget(ctr.GetId())
	}
	return nil
}

// podOf names ctr's pod as the runtime gives it (nil if a name does not
// pass control.Pod.Check).
func podOf(pod *api.PodSandbox, ctr *api.Container) *control.Pod {
	p := &control.Pod{Namespace: pod.GetNamespace(), Name: pod.GetName(), UID: pod.GetUid(), Container: ctr.GetName()}
	if p.Check() != nil {
		return nil
	}
	return p
}
