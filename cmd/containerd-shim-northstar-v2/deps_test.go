// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestShimLinksNoTPM: containerd runs the shim's start and delete for
// every container. It decides whether containerd restarted from the
// store's record and leaves the rare rotation to northstarctl (package
// lifecycle/rotate), so nothing the shim imports links go-tpm or the
// crypto go-tpm pulls, but for one package: hook, whose spec policy
// (PolicyFor, IdentityFor, PodFor, APIDisabled, CheckIdentityNamespace)
// the shim's prepare request shares with the hook, and which links the
// hook's own unseal through configured. Once that policy is in a package
// of its own, this test checks the whole binary, as the runtime's does.
func TestShimLinksNoTPM(t *testing.T) {
	const module = "github.com/northstar-oci/northstar/"
	out, err := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, module+"shim").CombinedOutput()
	if err != nil {
		t.Fatalf("go list shim: %v\n%s", err, out)
	}
	imports := strings.Fields(string(out))
	var rotate bool
	for _, p := range imports {
		rotate = rotate || p == module+"lifecycle/rotate"
		if p != module+"hook" {
			testenv.CheckLinksNoTPM(t, p)
		}
	}
	if !rotate {
		t.Errorf("package shim does not import lifecycle/rotate: %v", imports)
	}
	testenv.CheckLinksNoTPM(t, module+"lifecycle/rotate", module+"store")
}
