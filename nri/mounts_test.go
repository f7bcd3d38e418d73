// SPDX-License-Identifier: Apache-2.0

package nri

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/hook/delivery"
)

// TestOwnerAnnotationsAreTheHooks: the owner annotations are the hook's.
func TestOwnerAnnotationsAreTheHooks(t *testing.T) {
	for got, want := range map[string]string{annotationUID: delivery.AnnotationUID, annotationGID: delivery.AnnotationGID, annotationMode: delivery.AnnotationMode} {
		if got != want {
			t.Errorf("plugin reads %q, the hook %q", got, want)
		}
	}
}

// preparer records what the plugin asks the agent's registry for.
type preparer struct {
	id, identity string
	owner        *control.Owner
	api          bool
	err          error
	bound        map[string]int
	forgot       []string
}

func (p *preparer) Prepare(id, identity string, _ *control.Pod, owner *control.Owner, withAPI bool) (string, string, error) {
	p.id, p.identity, p.owner, p.api = id, identity, owner, withAPI
	if p.err != nil {
		return "", "", p.err
	}
	secret, dir := "", ""
	if owner != nil {
		secret = "/agent/containers/.prepared-x-secret"
	}
	if withAPI {
		dir = "/agent/containers/.prepared-x"
	}
	return secret, dir, nil
}

func (p *preparer) Bind(id string, pid int) (bool, error) {
	if p.bound == nil {
		p.bound = map[string]int{}
	}
	p.bound[id] = pid
	return p.id == id, p.err
}

func (p *preparer) Forget(id string) { p.forgot = append(p.forgot, id) }

// TestAdjustWithMounts: with the agent's registry, a container gets the
// agent's mounts and no hook; the owner and identity come from what NRI
// shows; a container with a user namespace, or the secret without live
// rotation, gets the hook; a refused preparation fails the creation.
func TestAdjustWithMounts(t *testing.T) {
	ctr := func(annotations map[string]string, userns bool) *api.Container {
		c := testContainer("app", annotations)
		c.User = &api.User{Uid: 1000, Gid: 100}
		if userns {
			c.Linux = &api.LinuxContainer{Namespaces: []*api.LinuxNamespace{{Type: "user"}}}
		}
		return c
	}
	t.Run("mounts, no hook", func(t *testing.T) {
		d := &preparer{}
		p := &plugin{hook: testHook, apiEnabled: true, deliver: d, live: true, secretMode: 0o440}
		adj, err := p.adjust(testPod(nil), ctr(map[string]string{annotationUID: "7", annotationMode: "0400"}, false))
		if err != nil {
			t.Fatal(err)
		}
		if len(adj.GetHooks().GetCreateRuntime()) != 0 {
			t.Error("the hook was added beside the mounts")
		}
		got := map[string]string{}
		for _, m := range adj.GetMounts() {
			got[m.Destination] = m.Source
			if m.Type != "bind" || !hasAll(m.Options, "ro", "nosuid", "nodev", "noexec") {
				t.Errorf("mount %s: type %s, options %v", m.Destination, m.Type, m.Options)
			}
		}
		if got["/run/northstar"] != "/agent/containers/.prepared-x-secret" || got["/run/northstar/api"] != "/agent/containers/.prepared-x" {
			t.Errorf("mounts %v", got)
		}
		if d.identity != "default/web/app" || d.owner == nil || *d.owner != (control.Owner{UID: 7, GID: 100, Mode: 0o400}) || !d.api {
			t.Errorf("prepared %q as %q, owner %+v, api %v", d.id, d.identity, d.owner, d.api)
		}
	})
	for _, tc := range []struct {
		name   string
		live   bool
		userns bool
	}{{"a user namespace of its own", true, true}, {"the secret without live rotation", false, false}} {
		t.Run(tc.name+": the hook", func(t *testing.T) {
			d := &preparer{}
			p := &plugin{hook: testHook, deliver: d, live: tc.live}
			adj, err := p.adjust(testPod(nil), ctr(nil, tc.userns))
			if err != nil {
				t.Fatal(err)
			}
			if len(adj.GetHooks().GetCreateRuntime()) != 1 || len(adj.GetMounts()) != 0 || d.id != "" {
				t.Errorf("hooks %v, mounts %v, prepared %q", adj.GetHooks(), adj.GetMounts(), d.id)
			}
		})
	}
	t.Run("a malformed owner annotation fails the creation", func(t *testing.T) {
		d := &preparer{}
		p := &plugin{hook: testHook, deliver: d, live: true}
		if _, err := p.adjust(testPod(nil), ctr(map[string]string{annotationGID: "-1"}, false)); err == nil || d.id != "" {
			t.Errorf("err %v, prepared %q", err, d.id)
		}
	})
	t.Run("a refused preparation fails the creation", func(t *testing.T) {
		p := &plugin{hook: testHook, deliver: &preparer{err: errors.New("no")}, live: true}
		if _, err := p.adjust(testPod(nil), ctr(nil, false)); err == nil {
			t.Error("the container was created without its mounts")
		}
	})
	t.Run("start binds, remove forgets", func(t *testing.T) {
		d := &preparer{id: "ctr1"}
		p := &plugin{deliver: d}
		c := ctr(nil, false)
		c.Pid = 4242
		if err := p.StartContainer(t.Context(), testPod(nil), c); err != nil || d.bound["ctr1"] != 4242 {
			t.Errorf("bind: %v, %v", err, d.bound)
		}
		d.err = errors.New("refused mount target")
		if err := p.StartContainer(t.Context(), testPod(nil), c); err == nil {
			t.Error("a refused bind did not fail the start")
		}
		if p.RemoveContainer(t.Context(), testPod(nil), c); len(d.forgot) != 1 {
			t.Errorf("forgot %v", d.forgot)
		}
		// Mounts an earlier agent prepared: this one cannot serve them.
		d.err, d.id = nil, ""
		c.Mounts = []*api.Mount{{Destination: "/run/northstar", Source: "/agent/containers/.prepared-y-secret"}}
		if err := p.StartContainer(t.Context(), testPod(nil), c); err == nil {
			t.Error("a container with another agent's mounts started")
		}
	})
}

func hasAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// TestExplicitIdentityConfinedToTheNamespace: with no hook to check it,
// the plugin keeps an explicit identity inside the pod's namespace, as
// the hook does (hook.TestIdentityConfinedToTheNamespace), unless
// [api] identity_any_namespace.
func TestExplicitIdentityConfinedToTheNamespace(t *testing.T) {
	pod := &api.PodSandbox{Namespace: "team-a", Name: "web"}
	for _, c := range []struct {
		id    string
		ns    string
		anyNS bool
		ok    bool
	}{
		{"team-a/broker", "team-a", false, true},
		{"kube-system/dns", "team-a", false, false},
		{"team-ab/broker", "team-a", false, false},
		{"broker", "team-a", false, false},
		{"kube-system/dns", "team-a", true, true},
		{"kube-system/dns", "", false, true}, // not Kubernetes'
	} {
		pod.Namespace = c.ns
		ctr := &api.Container{Id: "c1", Name: "app", Annotations: map[string]string{annotationIdentity: c.id}}
		got, err := identityOf(pod, ctr, c.anyNS)
		if c.ok != (err == nil) || (err == nil && got != c.id) {
			t.Errorf("%q in namespace %q (any %v): %q, %v", c.id, c.ns, c.anyNS, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), "identity_any_namespace = true") {
			t.Errorf("%q: %v does not name the config key", c.id, err)
		}
	}
}
