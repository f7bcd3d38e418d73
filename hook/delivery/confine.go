// SPDX-License-Identifier: Apache-2.0

package delivery

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/agent/identity"
)

// criPodNamespace is CRI-O's annotation of the pod's namespace;
// containerd's is criSandboxNamespace.
const criPodNamespace = "io.kubernetes.pod.namespace"

// CheckIdentityNamespace confines an explicit io.northstar.identity on a
// Kubernetes container to its pod's namespace: it must be
// "<namespace>/..." (DESIGN.md §15). Without it anyone who may create a
// pod in one namespace could name a workload of another (say
// "kube-system/...") and be given its identity, tokens and SVIDs. anyNS
// ([api] identity_any_namespace) lifts the rule, for clusters whose
// identities are cluster-wide by design. Containers that are not
// Kubernetes' (no namespace annotation) are not concerned.
func CheckIdentityNamespace(spec *specs.Spec, anyNS bool) error {
	id, ok := spec.Annotations[AnnotationIdentity]
	if !ok || anyNS {
		return nil
	}
	ns := spec.Annotations[criSandboxNamespace]
	if ns == "" {
		ns = spec.Annotations[criPodNamespace]
	}
	if err := identity.CheckNamespace(id, ns); err != nil {
		return fmt.Errorf("annotation %s=%w", AnnotationIdentity, err)
	}
	return nil
}
