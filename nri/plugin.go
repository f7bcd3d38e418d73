// SPDX-License-Identifier: Apache-2.0

// Package nri is northstar's NRI plugin (github.com/containerd/nri): for
// every CRI container that containerd 2.x (or CRI-O 1.30+) creates, it has
// the agent build the container's secret filesystem and API directory and
// hands the runtime bind mounts of them (mounts.go: no process on the
// start path), or, where the agent cannot (a user namespace of the
// container's own, live rotation off), adds the northstar hook at
// createRuntime; so Kubernetes pods get the lifecycle secret with no
// RuntimeClass and no base runtime spec. It is the CRI
// counterpart of package shim: both add the hook, both rotate the secret
// when the runtime restarts (here: when the plugin reconnects to a new
// runtime process, Run).
//
// The agent's process runs it (`northstarctl agent` with [nri] enable):
// one daemon to install and supervise, an answer from memory with no
// process start, and the agent's unseal-in-a-child discipline for the one
// step that touches a secret (the rotation, Options.Rotate). It is a
// package of its own, not part of package agent: the agent serves
// containers after their start, the plugin shapes their spec before it,
// and neither needs the other's code.
//
// What the plugin decides is the same as what the hook decides from the
// spec (package hook, policy.go): the opt-out annotations, the identity
// <namespace>/<pod>/<container>. It decides it earlier, so that a
// container that opted out of everything gets no hook at all, and from
// what NRI shows it (pod annotations, NRI style, included), so that a
// Kubernetes user can opt out without configuring containerd to pass
// annotations through.
package nri

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"
	nriplugin "github.com/containerd/nri/pkg/plugin"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/agent/identity"
	"github.com/northstar-oci/northstar/hook/entry"
)

// The annotations the plugin reads and writes; the same names as the
// hook's (hook/policy.go, DESIGN.md §3; TestAnnotationsAreTheHooks holds
// them equal). Not imported from package hook: that would link the hook's
// mount code into the agent.
const (
	annotationSecretDisable = "io.northstar.secret.disable"
	annotationAPIDisable    = "io.northstar.api.disable"
	annotationIdentity      = "io.northstar.identity"
)

// Name is the plugin's NRI name: what containerd's
// [plugins."io.containerd.nri.v1.nri".default_validator] required_plugins
// lists to fail pod starts closed while the plugin is away.
const Name = "northstar"

// Index orders the plugin among others (NRI runs them by index).
const Index = "10"

// plugin answers NRI's CreateContainer.
type plugin struct {
	hook       specs.Hook // the hook entry to add (entry.New)
	apiEnabled bool       // [api] enable: a container opted out of the secret may still want its API socket
	apiEnv     []string   // for a container that gets the API: where its SPIFFE Workload API is
	// deliver, when set, builds the container's mounts (no hook: mounts.go);
	// live says it delivers the secret too ([rotation] live), secretMode
	// is the secret file's default mode.
	deliver    Deliverer
	live       bool
	secretMode os.FileMode
	// anyNamespace ([api] identity_any_namespace) lets an explicit
	// io.northstar.identity name another namespace's workload.
	anyNamespace bool
}

// adjust returns what the plugin changes in a container about to be
// created: nothing (nil) for one that gets nothing from northstar, else
// the hook and the annotations that make the hook decide as the plugin
// did. An opt-out annotation with a value other than "true" or "false"
// is an error, which fails the container's creation: a typo must not
// change what a container gets.
func (p *plugin) adjust(pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, error) {
	// NRI sends no CreateContainer for a pod sandbox; a spec that says it
	// is one (annotations set by whoever builds the spec) gets nothing.
	if entry.IsPodSandbox(ctr.GetAnnotations()) {
		return nil, nil
	}
	// A northstar hook already in the spec (a RuntimeClass with a base
	// runtime spec, a hooks.d file): running it twice would mount twice.
	if hasNorthstarHook(ctr.GetHooks()) {
		return nil, nil
	}
	secretOff, err := optedOut(pod, ctr, annotationSecretDisable)
	if err != nil {
		return nil, err
	}
	apiOff, err := optedOut(pod, ctr, annotationAPIDisable)
	if err != nil {
		return nil, err
	}
	if secretOff && (apiOff || !p.apiEnabled) {
		return nil, nil
	}
	adj := &api.ContainerAdjustment{}
	mounted, err := p.withMounts(adj, pod, ctr, secretOff, apiOff)
	if err != nil {
		return nil, err
	}
	if !mounted {
		adj.AddHooks(&api.Hooks{CreateRuntime: api.FromOCIHookSlice([]specs.Hook{p.hook})})
	}
	// The hook reads the spec's annotations only; a pod annotation or
	// one containerd did not pass through reaches it so.
	annotations := ctr.GetAnnotations()
	if secretOff && annotations[annotationSecretDisable] != "true" {
		adj.AddAnnotation(annotationSecretDisable, "true")
	}
	if apiOff && annotations[annotationAPIDisable] != "true" {
		adj.AddAnnotation(annotationAPIDisable, "true")
	}
	// A container that gets the API learns where its Workload API is, as
	// the shim tells it (entry.Rewrite): unless it set the variable itself.
	if p.apiEnabled && !apiOff {
		for _, kv := range p.apiEnv {
			name, value, _ := strings.Cut(kv, "=")
			if !slices.ContainsFunc(ctr.GetEnv(), func(e string) bool { return strings.HasPrefix(e, name+"=") }) {
				adj.AddEnv(name, value)
			}
		}
	}
	// The identity from the names NRI gives, whatever annotations the
	// runtime uses for them (containerd's io.kubernetes.cri.*, from
	// which the hook would find the same, or CRI-O's). An explicit
	// io.northstar.identity in the spec stays: the hook checks it.
	if _, ok := annotations[annotationIdentity]; !ok {
		if id := pod.GetNamespace() + "/" + pod.GetName() + "/" + ctr.GetName(); pod.GetNamespace() != "" && pod.GetName() != "" && ctr.GetName() != "" && identity.Valid(id) {
			adj.AddAnnotation(annotationIdentity, id)
		}
	}
	return adj, nil
}

// optedOut reports whether the container opted out by annotation key:
// its own annotation (the CRI container config's, or the spec's) first,
// then the pod's, NRI style: key/container.<name>, key/pod, key.
func optedOut(pod *api.PodSandbox, ctr *api.Container, key string) (bool, error) {
	v, ok := ctr.GetAnnotations()[key]
	where := "container " + ctr.GetName()
	if !ok {
		v, ok = nriplugin.GetEffectiveAnnotation(pod, key, ctr.GetName())
		where = "pod " + pod.GetNamespace() + "/" + pod.GetName()
	}
	switch {
	case !ok || v == "false":
		return false, nil
	case v == "true":
		return true, nil
	}
	return false, fmt.Errorf("northstar: %s: annotation %s=%q: want \"true\" or \"false\"", where, key, v)
}

// hasNorthstarHook reports whether hooks run the northstar hook at any stage.
func hasNorthstarHook(h *api.Hooks) bool {
	if h == nil {
		return false
	}
	for _, stage := range [][]*api.Hook{h.Prestart, h.CreateRuntime, h.CreateContainer, h.StartContainer, h.Poststart, h.Poststop} {
		for _, x := range stage {
			if entry.IsNorthstar(specs.Hook{Path: x.GetPath()}) {
				return true
			}
		}
	}
	return false
}

// CreateContainer is NRI's request; see adjust.
func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	adj, err := p.adjust(pod, ctr)
	return adj, nil, err
}
