// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestRuntimeLinksNoTPM: Docker runs northstar-runtime for every runc
// call (create, start, state, delete, ...). It decides whether the
// engine restarted from the store's record and leaves the rare rotation
// to northstarctl (package lifecycle/rotate), and shares the hook's spec
// policy through hook/delivery, not the hook, so it links no go-tpm and
// none of the crypto go-tpm pulls.
func TestRuntimeLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	testenv.CheckLinksNoTPM(t, ".", module+"runcwrap", module+"lifecycle/rotate", module+"hook/delivery")
}
