// SPDX-License-Identifier: Apache-2.0

package control

import "fmt"

// Pod names the Kubernetes pod and container a CRI container belongs to,
// as the runtime's annotations say (containerd's io.kubernetes.cri.*):
// set by the runtime that creates the container, never by its processes.
// The agent asserts them to SPIRE as the selectors SPIRE's own Kubernetes
// workload attestor gives (DESIGN.md §16), so that entries written for
// Kubernetes workloads match.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
	Container string `json:"container"`
}

// maxPodField bounds each field: Kubernetes names are at most 253
// characters (a DNS subdomain), a UID 36.
const maxPodField = 253

// Check refuses a Pod whose fields are missing, too long or not
// printable ASCII without spaces.
func (p *Pod) Check() error {
	for _, f := range []struct{ name, v string }{{"namespace", p.Namespace}, {"name", p.Name}, {"uid", p.UID}, {"container", p.Container}} {
		if f.v == "" && f.name != "uid" {
			return fmt.Errorf("pod %s is empty", f.name)
		}
		if len(f.v) > maxPodField {
			return fmt.Errorf("pod %s is longer than %d characters", f.name, maxPodField)
		}
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c <= ' ' || c > '~' {
				return fmt.Errorf("pod %s %q is not printable ASCII without spaces", f.name, f.v)
			}
		}
	}
	return nil
}
