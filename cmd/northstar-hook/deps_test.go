// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestHookLinksOnlyTheProtocol: the hook, the shim and the runtime
// wrapper run at every container start, as root, on input the container's
// creator controls; they reach the agent through its control protocol
// (agent/control) and link none of the daemon: not its API server, registry, tokens, keys or
// SPIFFE Workload API, and no HTTP or gRPC stack.
func TestHookLinksOnlyTheProtocol(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	forbidden := []string{"net/http", module + "agent", module + "agent/registry", module + "agent/api", module + "agent/token", module + "agent/keys", module + "agent/spiffe", module + "client",
		module + "nri", "github.com/containerd/nri/pkg/api", "github.com/containerd/ttrpc", "google.golang.org/grpc",
		"github.com/spiffe/go-spiffe/v2/spiffeid"}
	for _, cmd := range []string{".", "../containerd-shim-northstar-v2", "../northstar-runtime"} {
		deps := testenv.Deps(t, cmd)
		if !deps[module+"hook"] && !deps[module+"shim"] && !deps[module+"runcwrap"] {
			t.Fatalf("go list -deps %s lists neither the hook, the shim nor the wrapper", cmd)
		}
		for _, p := range forbidden {
			if deps[p] {
				t.Errorf("%s links %s", cmd, p)
			}
		}
	}
}
