// SPDX-License-Identifier: Apache-2.0

package agenthook

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
)

// TestFastPathConstants: the C fast path (package agenthook/fastpath)
// reads as much state, builds requests as long and waits as long as Run;
// it names its constants after these, and a change to one is a change to
// the other.
func TestFastPathConstants(t *testing.T) {
	src, err := os.ReadFile("fastpath/fastpath.c")
	if err != nil {
		t.Fatal(err)
	}
	define := func(name string) int {
		t.Helper()
		m := regexp.MustCompile(`(?m)^#define ` + name + `\s+\(?(\d+)(?:\s*\*\s*(\d+))?\)?`).FindSubmatch(src)
		if m == nil {
			t.Fatalf("fastpath.c defines no %s", name)
		}
		v, _ := strconv.Atoi(string(m[1]))
		if len(m[2]) != 0 {
			k, _ := strconv.Atoi(string(m[2]))
			v *= k
		}
		return v
	}
	for _, c := range []struct {
		name string
		c    int
		goes int
	}{
		{"MAX_STATE", define("MAX_STATE"), maxState},
		{"MAX_REQUEST", define("MAX_REQUEST"), hookstart.MaxRequest},
		{"TIMEOUT_SECONDS", define("TIMEOUT_SECONDS"), int(timeout / time.Second)},
		{"ANSWER_MAX", define("ANSWER_MAX"), hookstart.MaxAnswer},
	} {
		if c.c != c.goes {
			t.Errorf("fastpath.c's %s is %d, the Go hook's %d", c.name, c.c, c.goes)
		}
	}
}
