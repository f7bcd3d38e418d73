// SPDX-License-Identifier: Apache-2.0

package nri

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/northstar-oci/northstar/hook/delivery"
	"github.com/northstar-oci/northstar/hook/entry"
)

// TestAnnotationsAreTheHooks: the plugin decides with the hook's
// annotation names; a rename in one place must not go unnoticed.
func TestAnnotationsAreTheHooks(t *testing.T) {
	for got, want := range map[string]string{
		annotationSecretDisable: delivery.AnnotationDisable,
		annotationAPIDisable:    delivery.AnnotationAPIDisable,
		annotationIdentity:      delivery.AnnotationIdentity,
	} {
		if got != want {
			t.Errorf("plugin reads %q, the hook %q", got, want)
		}
	}
}

var testHook = entry.New("/usr/bin/northstar-hook", "/etc/northstar/config.toml")

func testPod(annotations map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: "pod1", Name: "web", Namespace: "default", Annotations: annotations}
}

func testContainer(name string, annotations map[string]string) *api.Container {
	return &api.Container{Id: "ctr1", PodSandboxId: "pod1", Name: name, Annotations: annotations}
}

func TestAdjust(t *testing.T) {
	type want struct {
		hook        bool
		annotations map[string]string
		err         string
	}
	withID := func(a map[string]string) map[string]string {
		out := map[string]string{annotationIdentity: "default/web/app"}
		for k, v := range a {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		description string
		api         bool
		pod, ctr    map[string]string
		hooks       *api.Hooks
		want        want
	}{
		{"a plain container gets the hook and its identity", false, nil, nil, nil,
			want{hook: true, annotations: withID(nil)}},
		{"an explicit identity stays for the hook to check", false, nil, map[string]string{annotationIdentity: "mine"}, nil,
			want{hook: true, annotations: map[string]string{}}},
		{"secret off, API off by config: nothing", false, nil, map[string]string{annotationSecretDisable: "true"}, nil,
			want{}},
		{"secret off, API on: the hook, told so", true, nil, map[string]string{annotationSecretDisable: "true"}, nil,
			want{hook: true, annotations: withID(nil)}},
		{"secret and API off: nothing", true, nil, map[string]string{annotationSecretDisable: "true", annotationAPIDisable: "true"}, nil,
			want{}},
		{"API off by the pod: the hook, told so", true, map[string]string{annotationAPIDisable: "true"}, nil, nil,
			want{hook: true, annotations: withID(map[string]string{annotationAPIDisable: "true"})}},
		{"secret off by the pod for this container", false, map[string]string{annotationSecretDisable + "/container.app": "true"}, nil, nil,
			want{}},
		{"secret off by the pod for another container", false, map[string]string{annotationSecretDisable + "/container.other": "true"}, nil, nil,
			want{hook: true, annotations: withID(nil)}},
		{"secret off by the pod, /pod form", false, map[string]string{annotationSecretDisable + "/pod": "true"}, nil, nil,
			want{}},
		{"the container's own annotation wins over the pod's", false, map[string]string{annotationSecretDisable: "true"}, map[string]string{annotationSecretDisable: "false"}, nil,
			want{hook: true, annotations: withID(nil)}},
		{"the pod's opt-out reaches the hook as an annotation", true, map[string]string{annotationSecretDisable: "true"}, nil, nil,
			want{hook: true, annotations: withID(map[string]string{annotationSecretDisable: "true"})}},
		{"a malformed opt-out fails the creation", false, nil, map[string]string{annotationSecretDisable: "yes"}, nil,
			want{err: `container app: annotation io.northstar.secret.disable="yes"`}},
		{"a malformed pod opt-out fails the creation", false, map[string]string{annotationAPIDisable: "1"}, nil, nil,
			want{err: `pod default/web: annotation io.northstar.api.disable="1"`}},
		{"a pod sandbox gets nothing", true, nil, map[string]string{"io.kubernetes.cri.container-type": "sandbox"}, nil,
			want{}},
		{"a northstar hook already there (RuntimeClass, hooks.d): nothing", false, nil, nil,
			&api.Hooks{Prestart: []*api.Hook{{Path: "/usr/local/bin/northstar-hook"}}},
			want{}},
		{"other hooks do not count", false, nil, nil,
			&api.Hooks{CreateRuntime: []*api.Hook{{Path: "/usr/bin/nvidia-ctk"}}},
			want{hook: true, annotations: withID(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.description, func(t *testing.T) {
			p := &plugin{hook: testHook, apiEnabled: tt.api}
			ctr := testContainer("app", tt.ctr)
			ctr.Hooks = tt.hooks
			adj, err := p.adjust(testPod(tt.pod), ctr)
			if tt.want.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.want.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want.hook {
				if adj != nil {
					t.Fatalf("adjusted %v, want nothing", adj)
				}
				return
			}
			if adj == nil {
				t.Fatal("no adjustment, want the hook")
			}
			cr := adj.GetHooks().GetCreateRuntime()
			if len(cr) != 1 || len(adj.GetHooks().Hooks().GetPrestart()) != 0 {
				t.Fatalf("hooks %v, want one createRuntime hook", adj.GetHooks())
			}
			got := cr[0].ToOCI()
			if got.Path != testHook.Path || strings.Join(got.Args, " ") != strings.Join(testHook.Args, " ") ||
				strings.Join(got.Env, " ") != strings.Join(testHook.Env, " ") || got.Timeout == nil || *got.Timeout != *testHook.Timeout {
				t.Errorf("hook %+v, want %+v", got, testHook)
			}
			if len(adj.GetAnnotations()) != len(tt.want.annotations) {
				t.Errorf("annotations %v, want %v", adj.GetAnnotations(), tt.want.annotations)
			}
			for k, v := range tt.want.annotations {
				if adj.GetAnnotations()[k] != v {
					t.Errorf("annotation %s=%q, want %q", k, adj.GetAnnotations()[k], v)
				}
			}
		})
	}
}

// TestAdjustIdentityOnlyWhenValid: a name the identity rule refuses
// leaves the identity to the hook, which falls back to the container id
// as it does for CRI annotations.
func TestAdjustIdentityOnlyWhenValid(t *testing.T) {
	p := &plugin{hook: testHook}
	pod := testPod(nil)
	pod.Name = strings.Repeat("p", 250)
	adj, err := p.adjust(pod, testContainer("app", nil))
	if err != nil || adj == nil {
		t.Fatal(adj, err)
	}
	if id, ok := adj.GetAnnotations()[annotationIdentity]; ok {
		t.Errorf("identity %q set for a name longer than the rule allows", id)
	}
}

func BenchmarkAdjust(b *testing.B) {
	p := &plugin{hook: testHook, apiEnabled: true}
	pod, ctr := testPod(map[string]string{"a": "b"}), testContainer("app", map[string]string{"c": "d"})
	for b.Loop() {
		if _, err := p.adjust(pod, ctr); err != nil {
			b.Fatal(err)
		}
	}
}

// CreateContainer answers through the stub's interface.
var _ interface {
	CreateContainer(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error)
} = (*plugin)(nil)

// TestAdjustSetsTheAPIEnvironment: a container that gets the API learns
// where its SPIFFE Workload API is, as the shim tells it; one that opted
// out of the API, or set the variable itself, does not.
func TestAdjustSetsTheAPIEnvironment(t *testing.T) {
	env := entry.APIEnv("example.org")
	for _, tc := range []struct {
		description string
		api         bool
		ctr         map[string]string
		ctrEnv      []string
		want        []string
	}{
		{"the API: the variable", true, nil, []string{"PATH=/bin"}, env},
		{"the API off: none", true, map[string]string{annotationAPIDisable: "true"}, nil, nil},
		{"the API off by config: none", false, nil, nil, nil},
		{"the container's own value stays", true, nil, []string{"SPIFFE_ENDPOINT_SOCKET=unix:///spire.sock"}, nil},
	} {
		t.Run(tc.description, func(t *testing.T) {
			p := &plugin{hook: testHook, apiEnabled: tc.api, apiEnv: env}
			ctr := testContainer("app", tc.ctr)
			ctr.Env = tc.ctrEnv
			adj, err := p.adjust(testPod(nil), ctr)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range adj.GetEnv() {
				got = append(got, kv.GetKey()+"="+kv.GetValue())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("environment added %q, want %q", got, tc.want)
			}
		})
	}
}
