// SPDX-License-Identifier: Apache-2.0

package agentmounts

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/config/configtest"
)

// TestWhyHook: the specs that keep the hook, each for its reason, and the
// one that does not.
func TestWhyHook(t *testing.T) {
	cfg := &config.Config{}
	cfg.Agent.Socket = "/run/northstar-agent/agent.sock"
	own := []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}}
	spec := func(edit func(s *specs.Spec)) *specs.Spec {
		s := &specs.Spec{Linux: &specs.Linux{Namespaces: append([]specs.LinuxNamespace(nil), own...)},
			Mounts: []specs.Mount{{Destination: "/proc", Type: "proc"}, {Destination: "/vol", Options: []string{"rbind", "rslave"}}}}
		if edit != nil {
			edit(s)
		}
		return s
	}
	noAgent := &config.Config{}
	for _, tt := range []struct {
		name string
		cfg  *config.Config
		spec *specs.Spec
		want string // in the reason; "" none
	}{
		{"mounts", cfg, spec(nil), ""},
		{"no agent", noAgent, spec(nil), "no agent"},
		{"user namespace", cfg, spec(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		}), "user namespace"},
		{"joins a mount namespace", cfg, spec(func(s *specs.Spec) { s.Linux.Namespaces[0].Path = "/proc/1/ns/mnt" }), "mount namespace"},
		{"no mount namespace", cfg, spec(func(s *specs.Spec) { s.Linux.Namespaces = s.Linux.Namespaces[1:] }), "no mount namespace"},
		{"joins a PID namespace", cfg, spec(func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "/proc/9/ns/pid" }), "PID namespace"},
		{"shared mount", cfg, spec(func(s *specs.Spec) { s.Mounts[1].Options = []string{"rbind", "shared"} }), "/vol"},
		{"rshared mount", cfg, spec(func(s *specs.Spec) { s.Mounts[1].Options = []string{"rshared"} }), "/vol"},
		{"rshared root", cfg, spec(func(s *specs.Spec) { s.Linux.RootfsPropagation = "rshared" }), "propagation"},
		{"shared root", cfg, spec(func(s *specs.Spec) { s.Linux.RootfsPropagation = "shared" }), "propagation"},
		{"no linux section", cfg, spec(func(s *specs.Spec) { s.Linux = nil }), "no mount namespace"},
	} {
		got := WhyHook(tt.cfg, tt.spec)
		if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: WhyHook = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestPrepareRequest: what the agent is asked for follows the hook's
// policy: the owner from the process and the annotations, the identity,
// the opt-outs; nothing when there is nothing the agent would build.
func TestPrepareRequest(t *testing.T) {
	cfg := configtest.Host(t, "[agent]\nsocket = \"/run/a/agent.sock\"\n[api]\nenable = true\n")
	base := func(a map[string]string) *specs.Spec {
		return &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1001}}, Annotations: a}
	}
	r, err := PrepareRequest(cfg, base(map[string]string{"io.northstar.secret.mode": "0440", "io.northstar.identity": "web"}), "c1", "/b")
	if err != nil || r == nil || r.Secret == nil || r.Secret.UID != 1000 || r.Secret.GID != 1001 || r.Secret.Mode != 0o440 || !r.API || r.Identity != "web" || r.ID != "c1" || r.Bundle != "/b" {
		t.Errorf("PrepareRequest = %+v, %v", r, err)
	}
	if r, err := PrepareRequest(cfg, base(map[string]string{"io.northstar.secret.disable": "true"}), "c1", "/b"); err != nil || r == nil || r.Secret != nil || !r.API {
		t.Errorf("API only: %+v, %v", r, err)
	}
	if r, err := PrepareRequest(cfg, base(map[string]string{"io.northstar.secret.disable": "true", "io.northstar.api.disable": "true"}), "c1", "/b"); err != nil || r != nil {
		t.Errorf("opted out of both: %+v, %v; want the hook to decide", r, err)
	}
	if r, err := PrepareRequest(cfg, base(map[string]string{"io.kubernetes.cri.container-type": "sandbox"}), "c1", "/b"); err != nil || r != nil {
		t.Errorf("pod sandbox: %+v, %v", r, err)
	}
	if _, err := PrepareRequest(cfg, base(map[string]string{"io.northstar.secret.uid": "x"}), "c1", "/b"); err == nil {
		t.Error("a malformed annotation was accepted")
	}
	cfg.Rotation.Live = false
	if r, err := PrepareRequest(cfg, base(nil), "c1", "/b"); err != nil || r != nil {
		t.Errorf("live rotation off: %+v, %v; want the hook", r, err)
	}
}
