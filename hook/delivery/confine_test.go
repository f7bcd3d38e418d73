// SPDX-License-Identifier: Apache-2.0

package delivery

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestIdentityConfinedToTheNamespace: on a Kubernetes container an
// explicit identity must be in the pod's namespace, unless the config
// lifts the rule; others are not concerned.
func TestIdentityConfinedToTheNamespace(t *testing.T) {
	for _, c := range []struct {
		name  string
		ann   map[string]string
		anyNS bool
		ok    bool
	}{
		{"not Kubernetes", map[string]string{AnnotationIdentity: "kube-system/dns"}, false, true},
		{"no explicit identity", map[string]string{criSandboxNamespace: "team-a"}, false, true},
		{"inside its namespace (containerd)", map[string]string{criSandboxNamespace: "team-a", AnnotationIdentity: "team-a/broker"}, false, true},
		{"inside its namespace (CRI-O)", map[string]string{criPodNamespace: "team-a", AnnotationIdentity: "team-a/broker"}, false, true},
		{"another namespace's", map[string]string{criSandboxNamespace: "team-a", AnnotationIdentity: "kube-system/dns"}, false, false},
		{"a prefix is not the namespace", map[string]string{criSandboxNamespace: "team", AnnotationIdentity: "team-a/broker"}, false, false},
		{"no namespace at all", map[string]string{criPodNamespace: "team-a", AnnotationIdentity: "broker"}, false, false},
		{"allowed by the config", map[string]string{criSandboxNamespace: "team-a", AnnotationIdentity: "kube-system/dns"}, true, true},
	} {
		err := CheckIdentityNamespace(&specs.Spec{Annotations: c.ann}, c.anyNS)
		if c.ok != (err == nil) {
			t.Errorf("%s: %v", c.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "identity_any_namespace") {
			t.Errorf("%s: %v does not name the config key", c.name, err)
		}
	}
}
