// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var testMounts = []specs.Mount{
	{Destination: "/run/northstar", Type: "bind", Source: "/run/northstar-agent/containers/.prepared-1-secret", Options: []string{"bind", "ro"}},
	{Destination: "/run/northstar/api", Type: "bind", Source: "/run/northstar-agent/containers/.prepared-1", Options: []string{"bind", "ro"}},
}

// TestWithMounts: on every spec of the table, the agent's mounts come
// after every other mount, no northstar hook is left at any stage, the
// API env is added once, and every other member is as it was.
func TestWithMounts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatal(files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.WithMounts(testMounts, EnvSPIFFEEndpoint+"="+SPIFFEEndpoint)
			if err != nil {
				t.Fatal(err)
			}
			var before, after specs.Spec
			if err := json.Unmarshal(data, &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &after); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if n := len(after.Mounts); n < 2 || !reflect.DeepEqual(after.Mounts[n-2:], testMounts) || !reflect.DeepEqual(after.Mounts[:n-2], before.Mounts) && len(before.Mounts) > 0 {
				t.Errorf("mounts %+v, want %+v then ours", after.Mounts, before.Mounts)
			}
			if after.Hooks != nil && countNorthstar(after.Hooks) != 0 {
				t.Errorf("a northstar hook is left: %+v", after.Hooks)
			}
			if after.Process != nil && before.Process != nil {
				n := 0
				for _, e := range after.Process.Env {
					if e == EnvSPIFFEEndpoint+"="+SPIFFEEndpoint {
						n++
					}
				}
				if n != 1 {
					t.Errorf("env %q: want the API's variable once", after.Process.Env)
				}
			}
			// Nothing else moved: the same spec with the hooks, mounts and
			// env taken out.
			strip := func(s *specs.Spec) {
				s.Mounts, s.Hooks = nil, nil
				if s.Process != nil {
					s.Process.Env = nil
				}
			}
			strip(&before)
			strip(&after)
			if !reflect.DeepEqual(before, after) {
				t.Error("members other than the mounts, hooks and env changed")
			}
		})
	}
}

// TestParseConfigReadsWhatRuncReads: the members the shim decides on,
// decoded as runc decodes them (names case-insensitive, the last of
// repeated members).
func TestParseConfigReadsWhatRuncReads(t *testing.T) {
	data := []byte(`{"linux":{"namespaces":[{"type":"user"}]},"Linux":{"rootfsPropagation":"rshared","namespaces":[{"type":"mount","path":"/proc/1/ns/mnt"}]},` +
		`"process":{"user":{"uid":7,"gid":8},"env":["A=1"]},"mounts":null,"MOUNTS":[{"destination":"/x","options":["rshared"]}]}`)
	c, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Spec.Linux
	if l == nil || l.RootfsPropagation != "rshared" || len(l.Namespaces) != 1 || l.Namespaces[0].Path != "/proc/1/ns/mnt" {
		t.Errorf("linux %+v", l)
	}
	if p := c.Spec.Process; p == nil || p.User.UID != 7 || p.User.GID != 8 {
		t.Errorf("process %+v", p)
	}
	if len(c.Spec.Mounts) != 1 || c.Spec.Mounts[0].Options[0] != "rshared" {
		t.Errorf("mounts %+v", c.Spec.Mounts)
	}
	out, err := c.WithMounts(testMounts)
	if err != nil {
		t.Fatal(err)
	}
	var after specs.Spec
	if err := json.Unmarshal(out, &after); err != nil {
		t.Fatal(err)
	}
	if len(after.Mounts) != 3 || after.Mounts[0].Destination != "/x" {
		t.Errorf("runc would mount %+v", after.Mounts)
	}
}
