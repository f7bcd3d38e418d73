// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPrefaultInitialisedEarly: internal/prefault maps the heap before
// the packages whose initialisation allocates (go-tpm, crypto, net) run
// theirs, as GODEBUG=inittrace=1 shows in the built hook.
func TestPrefaultInitialisedEarly(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "northstar-hook")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := exec.Command(bin, "--no-such-flag")
	run.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, _ := run.CombinedOutput() // a usage error, after every init
	var order []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			order = append(order, f[1])
		}
	}
	at := func(pkg string) int {
		i := slices.Index(order, pkg)
		if i < 0 {
			t.Fatalf("inittrace lists no %s:\n%s", pkg, out)
		}
		return i
	}
	prefault := at("github.com/northstar-oci/northstar/internal/prefault")
	for _, later := range []string{"github.com/google/go-tpm/tpm2", "github.com/google/go-tpm/legacy/tpm2", "crypto/internal/fips140/rsa", "net", "net/netip", "os"} {
		if at(later) < prefault {
			t.Errorf("%s is initialised before internal/prefault: %v", later, order)
		}
	}
}
