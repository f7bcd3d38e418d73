// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

// Deps is the set of packages the command pkg (a package path or a
// directory, as go list takes it) links: `go list -deps`.
func Deps(tb testing.TB, pkg string) map[string]bool {
	tb.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		tb.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	return deps
}

// tpmLinked are the packages linking the TPM sealer brings into a binary:
// go-tpm (any package under these prefixes), the public-key crypto it
// pulls, northstar's TPM sealer, and configured, which builds it.
var tpmLinked = []string{
	"github.com/google/go-tpm/",
	"crypto/rsa", "crypto/ecdsa", "crypto/elliptic", "crypto/x509",
	"github.com/northstar-oci/northstar/seal/tpmseal",
	"github.com/northstar-oci/northstar/seal/tpmconn",
	"github.com/northstar-oci/northstar/configured",
}

// CheckLinksNoTPM fails tb if the command pkg links any of tpmLinked, or
// does not link each of mustLink (so that the check looks at the right
// binary): a binary run on every container start must not pay their
// package initialisation and page faults when it does not seal
// (docs/performance.md).
func CheckLinksNoTPM(tb testing.TB, pkg string, mustLink ...string) {
	tb.Helper()
	deps := Deps(tb, pkg)
	for p := range deps {
		for _, bad := range tpmLinked {
			if p == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(p, bad)) {
				tb.Errorf("%s links %s", pkg, p)
			}
		}
	}
	for _, p := range mustLink {
		if !deps[p] {
			tb.Errorf("%s does not link %s: not the binary this check is about", pkg, p)
		}
	}
}
