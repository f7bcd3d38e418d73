// SPDX-License-Identifier: Apache-2.0

package identity

import (
	"fmt"
	"strings"
)

// CheckNamespace confines an explicit identity on a Kubernetes container
// to its pod's namespace ns: it must be "<ns>/..." (DESIGN.md §15).
// Without it anyone who may create a pod in one namespace could name a
// workload of another (say "kube-system/...") and be given its identity,
// tokens and SVIDs. A container with no namespace ("") is not
// Kubernetes' and is not concerned. The hook (on the spec's annotations)
// and the NRI plugin (on the pod NRI names) both keep this rule;
// [api] identity_any_namespace lifts it, in either.
func CheckNamespace(id, ns string) error {
	if ns == "" || strings.HasPrefix(id, ns+"/") {
		return nil
	}
	return fmt.Errorf("%q is outside the pod's namespace %q: name it %s/..., or set [api] identity_any_namespace = true", id, ns, ns)
}
