// SPDX-License-Identifier: Apache-2.0

package setup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	for out, want := range map[string]Version{
		"containerd github.com/containerd/containerd/v2 v2.4.2 2f5ac4d35\n":             {2, 4},
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n": {1, 6},
		"containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da\n":    {1, 7},
	} {
		if got, err := ParseVersion(out); err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", out, got, err, want)
		}
	}
	if _, err := ParseVersion("containerd dev"); err == nil {
		t.Error("a version from no version")
	}
}

// testContainerd is a Containerd on files in a temporary directory.
func testContainerd(t *testing.T, v Version, cri string, mainConfig string) *Containerd {
	t.Helper()
	dir := t.TempDir()
	c := &Containerd{Config: filepath.Join(dir, "config.toml"), DropIns: filepath.Join(dir, "conf.d"), Version: v, CRI: cri,
		NRISocket: "/run/test/nri.sock", Shim: "/usr/bin/containerd-shim-northstar-v2",
		BaseSpec: filepath.Join(dir, "northstar-base-spec.json"), BaseSpecJSON: []byte("{}\n")}
	if mainConfig != "" {
		if err := os.WriteFile(c.Config, []byte(mainConfig), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// applyTwice applies the plan, then checks that a second plan finds
// nothing to do, and returns the files written.
func applyTwice(t *testing.T, c *Containerd) *Plan {
	t.Helper()
	p, err := c.Plan()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) == 0 {
		t.Fatal("nothing planned")
	}
	if _, err := Apply(p.Changes, time.Now()); err != nil {
		t.Fatal(err)
	}
	again, err := c.Plan()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range again.Changes {
		t.Errorf("second run would change %s again:\n%s", ch.Path, ch.New)
	}
	return p
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDropInWithoutAConfig(t *testing.T) {
	c := testContainerd(t, Version{2, 4}, CRINRI, "")
	applyTwice(t, c)
	main, err := parseTOML(c.Config, []byte(read(t, c.Config)))
	if err != nil || !imported(main["imports"], filepath.Join(c.DropIns, DropInName)) || main["version"] != int64(3) {
		t.Errorf("the new config.toml does not import the drop-in: %v, %v", main, err)
	}
	drop, err := parseTOML("", []byte(read(t, filepath.Join(c.DropIns, DropInName))))
	if err != nil {
		t.Fatal(err)
	}
	nri, _ := lookup(drop, nriPath)
	v, _ := lookup(drop, append(nriPath, "default_validator"))
	if nri["disable"] != false || nri["socket_path"] != "/run/test/nri.sock" || v["enable"] != true || !equalValue(v["required_plugins"], []string{"northstar"}) {
		t.Errorf("drop-in: %v", drop)
	}
}

func TestDropInKeepsTheConfig(t *testing.T) {
	const user = "# mine\nversion = 4 # current\nroot = \"/r\"\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  restrict_oom_score_adj = true\n"
	c := testContainerd(t, Version{2, 4}, CRINRI, user)
	applyTwice(t, c)
	got := read(t, c.Config)
	want := strings.Replace(user, "# current\n", "# current\nimports = ["+`"`+filepath.Join(c.DropIns, "*.toml")+`"`+"]\n", 1)
	if got != want {
		t.Errorf("config.toml:\n%s\nwant only the imports line added:\n%s", got, want)
	}
	if d := read(t, filepath.Join(c.DropIns, DropInName)); !strings.Contains(d, "\nversion = 4\n") {
		t.Errorf("the drop-in is not of the config's version 4:\n%s", d)
	}
	if m, _ := filepath.Glob(c.Config + ".northstar-*.bak"); len(m) != 1 || read(t, m[0]) != user {
		t.Errorf("backups %v, want one holding the original", m)
	}
}

func TestDropInImports(t *testing.T) {
	for _, tt := range []struct {
		description, imports string
		want                 string // the new imports line; "" = unchanged
	}{
		{"another import", `imports = ["/etc/other/*.toml"]`, `imports = ["/etc/other/*.toml", "GLOB"]`},
		{"an empty list", `imports = [] # none`, `imports = ["GLOB"] # none`},
		{"the drop-in directory already", `imports = ["GLOB"]`, ""},
		{"the drop-in itself already", `imports = ["DIR/99-northstar.toml"]`, ""},
	} {
		t.Run(tt.description, func(t *testing.T) {
			c := testContainerd(t, Version{2, 1}, CRINRI, "")
			glob := filepath.Join(c.DropIns, "*.toml")
			sub := strings.NewReplacer("GLOB", glob, "DIR", c.DropIns)
			user := "version = 3\n" + sub.Replace(tt.imports) + "\n[plugins.x]\n  a = 1\n"
			os.WriteFile(c.Config, []byte(user), 0o600)
			p, err := c.Plan()
			if err != nil {
				t.Fatal(err)
			}
			var mainChange *Change
			for i := range p.Changes {
				if p.Changes[i].Path == c.Config {
					mainChange = &p.Changes[i]
				}
			}
			switch {
			case tt.want == "" && mainChange != nil:
				t.Errorf("config.toml changed although it imports the drop-in:\n%s", mainChange.New)
			case tt.want != "" && (mainChange == nil || !strings.Contains(string(mainChange.New), "\n"+sub.Replace(tt.want)+"\n")):
				t.Errorf("config.toml change %v, want the line %s", mainChange, sub.Replace(tt.want))
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	for _, tt := range []struct {
		description string
		v           Version
		cri, config string
		want        string
	}{
		{"a config that does not parse", Version{2, 4}, CRINRI, "version = 3\n[plugins\n", "config.toml: line 2:"},
		{"a config that does not parse, edit mode", Version{1, 6}, CRIRuntimeClass, "version = 2\nx = = 1\n", "config.toml: line 2:"},
		{"imports over several lines", Version{2, 4}, CRINRI, "version = 3\nimports = [\n  \"/a/*.toml\",\n]\n", "line 2: imports spans several lines"},
		{"NRI on containerd 1.x", Version{1, 7}, CRINRI, "", "use --cri runtime-class"},
		{"a northstar runtime of the user's", Version{1, 6}, CRIRuntimeClass,
			"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.northstar]\n  runtime_type = \"io.containerd.runc.v2\"\n",
			`runtimes.northstar] has runtime_type = io.containerd.runc.v2`},
		{"NRI disabled in the file, containerd 2.0", Version{2, 0}, CRINRI,
			"version = 3\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n", `has disable = true, northstar needs false`},
		{"a block without its end", Version{1, 6}, CRIRuntimeClass, "version = 2\n" + blockBegin + "\n", "has no end line"},
	} {
		t.Run(tt.description, func(t *testing.T) {
			c := testContainerd(t, tt.v, tt.cri, tt.config)
			_, err := c.Plan()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Plan: %v, want an error containing %q", err, tt.want)
			}
			if strings.HasPrefix(tt.want, "config.toml: line") {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Errorf("%v is no ParseError", err)
				}
			}
		})
	}
}

func TestEditBlock(t *testing.T) {
	const user = "version = 2\nroot = \"/r\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
	c := testContainerd(t, Version{1, 6}, CRIRuntimeClass, user)
	applyTwice(t, c)
	got := read(t, c.Config)
	if !strings.HasPrefix(got, user+"\n"+blockBegin+"\n") || !strings.HasSuffix(got, blockEnd+"\n") ||
		!strings.Contains(got, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.northstar]\n  runtime_type = \"io.containerd.northstar.v2\"\n  runtime_path = \"/usr/bin/containerd-shim-northstar-v2\"\n") {
		t.Fatalf("config.toml:\n%s", got)
	}
	// The shim moved: the block is rewritten, not added twice.
	c.Shim = "/opt/ns/containerd-shim-northstar-v2"
	applyTwice(t, c)
	got = read(t, c.Config)
	if strings.Count(got, blockBegin) != 1 || !strings.Contains(got, c.Shim) || strings.Contains(got, "/usr/bin/containerd-shim") {
		t.Errorf("config.toml after the shim moved:\n%s", got)
	}
	// Without a file: one with the version of this containerd.
	n := testContainerd(t, Version{1, 7}, CRIRuntimeClass, "")
	applyTwice(t, n)
	if got := read(t, n.Config); !strings.HasPrefix(got, "version = 2\n") {
		t.Errorf("new config.toml:\n%s", got)
	}
}

// TestEditContainerd20: before 2.1 a drop-in's plugin table would replace
// the config's, so NRI settings go into the config itself; settings it
// has already (or containerd's defaults that match) are not repeated.
func TestEditContainerd20(t *testing.T) {
	c := testContainerd(t, Version{2, 0}, CRINRI, "version = 3\n[plugins.\"io.containerd.nri.v1.nri\"]\n  plugin_path = \"/opt/nri/plugins\"\n")
	c.NRISocket = "/var/run/nri/nri.sock"
	p, err := c.Plan()
	if err != nil || len(p.Changes) != 0 {
		t.Errorf("a config with NRI at its default socket: changes %v, %v; want none", p, err)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "no required_plugins") {
		t.Errorf("notes %q: want the fail-open warning", p.Notes)
	}
	c.NRISocket = "/run/test/nri.sock"
	if _, err := c.Plan(); err == nil || !strings.Contains(err.Error(), `lacks socket_path = "/run/test/nri.sock"`) {
		t.Errorf("another socket, in a table of the user's: %v", err)
	}
	d := testContainerd(t, Version{2, 0}, CRINRI, "version = 3\n")
	applyTwice(t, d)
	if got := read(t, d.Config); !strings.Contains(got, blockBegin+"\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n  socket_path = \"/run/test/nri.sock\"\n"+blockEnd) {
		t.Errorf("config.toml:\n%s", got)
	}
}

func TestRuntimeClassOn2x(t *testing.T) {
	c := testContainerd(t, Version{2, 4}, CRIRuntimeClass, "")
	applyTwice(t, c)
	drop := read(t, filepath.Join(c.DropIns, DropInName))
	if !strings.Contains(drop, `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.northstar]`) || !strings.Contains(drop, "base_runtime_spec = "+`"`+c.BaseSpec+`"`) {
		t.Errorf("drop-in:\n%s", drop)
	}
	if read(t, c.BaseSpec) != "{}\n" {
		t.Error("the base spec was not written")
	}
}

func TestNotes(t *testing.T) {
	for _, tt := range []struct {
		v        Version
		failOpen bool
		want     string
	}{
		{Version{2, 2}, false, "pod starts fail (required_plugins)"},
		{Version{2, 2}, true, "--fail-open"},
		{Version{2, 1}, false, "containerd 2.1 has no required_plugins"},
	} {
		c := testContainerd(t, tt.v, CRINRI, "")
		c.FailOpen = tt.failOpen
		p, err := c.Plan()
		if err != nil || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], tt.want) {
			t.Errorf("%v fail-open %v: notes %q, %v; want %q", tt.v, tt.failOpen, p.Notes, err, tt.want)
		}
		if drop := string(p.Changes[0].New); strings.Contains(drop, "required_plugins") != (tt.v.atLeast(2, 2) && !tt.failOpen) {
			t.Errorf("%v fail-open %v: drop-in\n%s", tt.v, tt.failOpen, drop)
		}
	}
}

// TestApplyRefusesAFileChangedSincePlanned: another writer between plan
// and apply loses nothing.
func TestApplyRefusesAFileChangedSincePlanned(t *testing.T) {
	c := testContainerd(t, Version{1, 6}, CRIRuntimeClass, "version = 2\n")
	p, err := c.Plan()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.Config, []byte("version = 2\n# edited\n"), 0o600)
	if _, err := Apply(p.Changes, time.Now()); err == nil || !strings.Contains(err.Error(), "changed while setup ran") {
		t.Fatalf("Apply: %v", err)
	}
	if got := read(t, c.Config); got != "version = 2\n# edited\n" {
		t.Errorf("the other writer's file became:\n%s", got)
	}
}

func TestDescribe(t *testing.T) {
	var b strings.Builder
	Change{Path: "/c.toml", Old: []byte("a\nb\nc\nd\ne\n"), New: []byte("a\nb\nc\nX\nd\ne\n"), Why: "test"}.Describe(&b)
	want := "edit /c.toml (test):\n  ...\n    c\n  + X\n    d\n  ...\n"
	if b.String() != want {
		t.Errorf("Describe:\n%s\nwant:\n%s", b.String(), want)
	}
}
