// SPDX-License-Identifier: Apache-2.0

// Package delivery decides, from a container's OCI spec, how it gets the
// lifecycle secret and whom it speaks as through the agent's API: the
// secret's owner and mode (PolicyFor), its identity (IdentityFor,
// CheckIdentityNamespace), its pod (PodFor), an opt-out of the API
// (APIDisabled). The hook, the agent's mounts (the shim, the runtime
// wrapper) and the NRI plugin decide alike by sharing it; it links no
// sealer, so neither do the wrappers, which the runtimes run for every
// container.
package delivery

import (
	"fmt"
	"math"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/identity"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/secretfs"
)

// Annotations a container may carry to change how its secret is delivered.
const (
	AnnotationDisable = "io.northstar.secret.disable"
	AnnotationUID     = "io.northstar.secret.uid"
	AnnotationGID     = "io.northstar.secret.gid"
	AnnotationMode    = "io.northstar.secret.mode"
)

// Policy is how one container gets its secret. UID and GID are in the
// container's user namespace.
type Policy struct {
	// Skip: the container gets nothing at all (a pod's pause container).
	Skip bool
	// Disabled: no secret (io.northstar.secret.disable); the API still
	// comes with [api] enable unless io.northstar.api.disable says no.
	Disabled bool
	UID, GID uint32
	Mode     os.FileMode
}

// PolicyFor derives the policy from the spec's annotations, its process user
// and the configured default mode. Malformed annotations are errors, never
// silently ignored: a typo must not change who can read the secret.
func PolicyFor(spec *specs.Spec, defaultMode os.FileMode) (*Policy, error) {
	p := &Policy{Mode: defaultMode}
	if spec.Process != nil {
		p.UID, p.GID = spec.Process.User.UID, spec.Process.User.GID
	}
	a := spec.Annotations
	if entry.IsPodSandbox(a) {
		// A Kubernetes pod's pause container runs no workload. Injectors
		// skip it already; a hook that reached it anyway (a base runtime
		// spec applied to sandboxes too) gives it nothing: no secret, no
		// registration with the agent.
		p.Skip, p.Disabled = true, true
		return p, nil
	}
	if v, ok := a[AnnotationDisable]; ok {
		switch v {
		case "true":
			p.Disabled = true
			return p, nil
		case "false":
		default:
			return nil, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", AnnotationDisable, v)
		}
	}
	var err error
	if v, ok := a[AnnotationUID]; ok {
		if p.UID, err = parseID(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationUID, err)
		}
	}
	if v, ok := a[AnnotationGID]; ok {
		if p.GID, err = parseID(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationGID, err)
		}
	}
	if v, ok := a[AnnotationMode]; ok {
		if p.Mode, err = secretfs.ParseMode(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationMode, err)
		}
	}
	return p, nil
}

// parseID accepts a decimal id; 2^32-1 is the kernel's "no id" and refused.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 || len(s) > 10 {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(n), nil
}

// Annotations of the agent's API (DESIGN.md §3).
const (
	AnnotationIdentity   = "io.northstar.identity"
	AnnotationAPIDisable = entry.AnnotationAPIDisable

	criSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	criSandboxName      = "io.kubernetes.cri.sandbox-name"
	criContainerName    = "io.kubernetes.cri.container-name"
	criSandboxUID       = "io.kubernetes.cri.sandbox-uid"
)

// PodFor names the Kubernetes pod of a CRI container from the runtime's
// annotations (nil for another container, or one whose names do not
// pass control.Pod.Check): the agent's SPIRE issuer asserts them as k8s:
// selectors.
func PodFor(spec *specs.Spec) *control.Pod {
	a := spec.Annotations
	p := &control.Pod{Namespace: a[criSandboxNamespace], Name: a[criSandboxName], UID: a[criSandboxUID], Container: a[criContainerName]}
	if p.Check() != nil {
		return nil
	}
	return p
}

// IdentityFor returns whom a container speaks as through the API:
// io.northstar.identity when set (a malformed one is an error naming it);
// else, for a Kubernetes CRI container, <namespace>/<pod>/<container>; else
// the OCI container id. Annotations are set by whoever creates the
// container, never by its processes.
func IdentityFor(spec *specs.Spec, containerID string) (string, error) {
	a := spec.Annotations
	if v, ok := a[AnnotationIdentity]; ok {
		if !identity.Valid(v) {
			return "", fmt.Errorf("annotation %s=%q: want 1-253 characters of [A-Za-z0-9._:@/-]", AnnotationIdentity, v)
		}
		return v, nil
	}
	ns, pod, name := a[criSandboxNamespace], a[criSandboxName], a[criContainerName]
	if ns != "" && pod != "" && name != "" {
		if id := ns + "/" + pod + "/" + name; identity.Valid(id) {
			return id, nil
		}
	}
	if !identity.Valid(containerID) {
		return "", fmt.Errorf("container id %q is no identity; set %s", containerID, AnnotationIdentity)
	}
	return containerID, nil
}

// APIDisabled reports whether the container opted out of the API.
func APIDisabled(spec *specs.Spec) (bool, error) {
	switch v, ok := spec.Annotations[AnnotationAPIDisable]; {
	case !ok || v == "false":
		return false, nil
	case v == "true":
		return true, nil
	default:
		return false, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", AnnotationAPIDisable, v)
	}
}
