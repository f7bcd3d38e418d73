// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestShimLinksNoTPM: containerd runs the shim's start and delete for
// every container. It decides whether containerd restarted from the
// store's record and leaves the rare rotation to northstarctl, so it links
// no go-tpm and none of the crypto go-tpm pulls (package
// lifecycle/rotate).
func TestShimLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", module+"shim", module+"lifecycle/rotate")
}
