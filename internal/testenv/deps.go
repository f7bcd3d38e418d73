// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

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

// CheckLinksNoTPM fails tb if the command pkg (a package path or a
// directory, as go list takes it) links any of tpmLinked, or does not
// link each of mustLink (so that the check looks at the right binary): a
// binary run on every container start must not pay their package
// initialisation and page faults when it does not seal
// (docs/performance.md). What pkg reaches only through a package in
// bypass is not looked at: a known path the caller names, which the
// check holds to that one path.
func CheckLinksNoTPM(tb testing.TB, pkg string, bypass []string, mustLink ...string) {
	tb.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pkg).CombinedOutput()
	if err != nil {
		tb.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	imports := map[string][]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		imports[f[0]] = f[1:]
	}
	root := strings.Fields(lines[len(lines)-1])[0] // -deps lists the package itself last
	reached := map[string]bool{root: true}
	for todo := []string{root}; len(todo) > 0; {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, q := range imports[p] {
			if !reached[q] && !slices.Contains(bypass, q) {
				reached[q] = true
				todo = append(todo, q)
			}
		}
	}
	for p := range reached {
		for _, bad := range tpmLinked {
			if p == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(p, bad)) {
				tb.Errorf("%s links %s", root, p)
			}
		}
	}
	for _, p := range mustLink {
		if !reached[p] {
			tb.Errorf("%s does not link %s: not the binary this check is about", root, p)
		}
	}
}
