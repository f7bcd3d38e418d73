// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestShimLinksNoTPM: containerd runs the shim's start and delete for
// every container. It decides whether containerd restarted from the
// store's record and leaves the rare rotation to northstarctl (package
// lifecycle/rotate), and shares the hook's spec policy through
// hook/delivery, not the hook, so it links no go-tpm and none of the
// crypto go-tpm pulls.
func TestShimLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", module+"shim", module+"lifecycle/rotate", module+"hook/delivery")
}
