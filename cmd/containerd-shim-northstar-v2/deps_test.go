// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestShimLinksNoTPM: containerd runs the shim's start and delete for
// every container. It decides whether containerd restarted from the
// store's record and leaves the rare rotation to northstarctl (package
// lifecycle/rotate), so it links no go-tpm and none of the crypto go-tpm
// pulls, but through one package: hook, whose spec policy (PolicyFor,
// IdentityFor, PodFor, APIDisabled, CheckIdentityNamespace) the shim's
// prepare request shares with the hook (through hook/agentmounts), and
// which links the hook's own unseal through configured. With that policy
// in a package of its own, the bypass goes.
func TestShimLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", []string{module + "hook"}, module+"shim", module+"lifecycle/rotate")
}
