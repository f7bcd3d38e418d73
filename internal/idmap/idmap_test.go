// SPDX-License-Identifier: Apache-2.0

package idmap

import (
	"os"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader("         0     200000      65536\n     65536       1001          1\n"), "uid")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{{0, 200000, 65536}, {65536, 1001, 1}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Parse = %+v, want %+v", got, want)
	}
	for name, in := range map[string]string{
		"two fields":      "0 1000\n",
		"four fields":     "0 1000 1 2\n",
		"negative":        "0 -1 1\n",
		"beyond 32 bits":  "0 4294967296 1\n",
		"not a number":    "0 root 1\n",
		"hex":             "0 0x10 1\n",
		"trailing junk":   "0 1000 1x\n",
		"good then wrong": "0 1000 1\nnope\n",
	} {
		if m, err := Parse(strings.NewReader(in), "gid"); err == nil {
			t.Errorf("%s: accepted as %+v", name, m)
		} else if !strings.Contains(err.Error(), "gid_map") {
			t.Errorf("%s: error %q does not name gid_map", name, err)
		}
	}
}

func TestToOutside(t *testing.T) {
	maps := []Mapping{{Inside: 0, Outside: 200000, Count: 1000}, {Inside: 1000, Outside: 1001, Count: 1}}
	for _, tt := range []struct {
		in, out uint32
		ok      bool
	}{
		{0, 200000, true},
		{999, 200999, true},
		{1000, 1001, true},
		{1001, 0, false},
		{4294967294, 0, false},
	} {
		out, ok := ToOutside(maps, tt.in)
		if out != tt.out || ok != tt.ok {
			t.Errorf("ToOutside(%d) = %d, %v; want %d, %v", tt.in, out, ok, tt.out, tt.ok)
		}
	}
	// The full range of the initial namespace: no overflow at the top.
	full := []Mapping{{Inside: 0, Outside: 0, Count: 4294967295}}
	if out, ok := ToOutside(full, 4294967294); !ok || out != 4294967294 {
		t.Errorf("full range: ToOutside(2^32-2) = %d, %v", out, ok)
	}
	if _, ok := ToOutside(nil, 0); ok {
		t.Error("an empty map (user namespace without mappings) translated an id")
	}
}

func TestReadSelf(t *testing.T) {
	maps, err := Read(os.Getpid(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) == 0 {
		t.Fatal("no uid_map lines for this process")
	}
	if _, err := Read(os.Getpid(), "nope"); err == nil {
		t.Error("Read of a nonexistent map succeeded")
	}
}

// TestHostUID: this process's uid through its own uid_map; in the
// initial user namespace, its euid itself.
func TestHostUID(t *testing.T) {
	uid, err := HostUID()
	if err != nil {
		t.Fatal(err)
	}
	maps, err := Read(os.Getpid(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	want, ok := ToOutside(maps, uint32(os.Geteuid()))
	if !ok || uid != want {
		t.Errorf("HostUID = %d, want %d (mapped: %v)", uid, want, ok)
	}
	if len(maps) == 1 && maps[0] == (Mapping{0, 0, 4294967295}) && uid != uint32(os.Geteuid()) {
		t.Errorf("HostUID = %d in the initial user namespace, want the euid %d", uid, os.Geteuid())
	}
}
