// SPDX-License-Identifier: Apache-2.0

package setup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Version is a containerd release, major.minor.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// atLeast reports whether v is major.minor or later.
func (v Version) atLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// ParseVersion reads the version from `containerd --version`:
// "containerd github.com/containerd/containerd/v2 v2.4.2 <commit>" or
// Debian's "containerd containerd.io 1.6.20~ds1 <commit>".
func ParseVersion(out string) (Version, error) {
	for _, f := range strings.Fields(out) {
		m := versionRE.FindStringSubmatch(f)
		if m == nil {
			continue
		}
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		return Version{major, minor}, nil
	}
	return Version{}, fmt.Errorf("no version in %q", strings.TrimSpace(out))
}

var versionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)\.\d+`)

// How CRI containers get the hook.
const (
	// CRINRI: the agent's NRI plugin (containerd 2.x).
	CRINRI = "nri"
	// CRIRuntimeClass: a runtime handler "northstar" for a Kubernetes
	// RuntimeClass (containerd 1.x, or by choice).
	CRIRuntimeClass = "runtime-class"
)

// DropInName is the file setup writes in containerd's conf.d.
const DropInName = "99-northstar.toml"

// The block setup keeps in a config it edits (containerd before 2.1).
const (
	blockBegin = "# BEGIN northstar: written by 'northstarctl setup containerd'; edit outside this block"
	blockEnd   = "# END northstar"
)

// Containerd is what `northstarctl setup containerd` wires.
type Containerd struct {
	Config  string  // containerd's config.toml
	DropIns string  // its conf.d directory (drop-in mode)
	Version Version // of the containerd that reads Config
	CRI     string  // CRINRI or CRIRuntimeClass
	// FailOpen leaves the plugin out of required_plugins (containerd
	// 2.2+), so pods start without the secret while it is away.
	FailOpen  bool
	NRISocket string // [nri] socket
	Shim      string // containerd-shim-northstar-v2 (runtime_path)
	// BaseSpec and BaseSpecJSON: the base runtime spec a runtime handler
	// needs on containerd 2.x (CRIRuntimeClass there).
	BaseSpec     string
	BaseSpecJSON []byte
}

// Plan is what a run would do.
type Plan struct {
	Changes []Change
	Notes   []string // what the user should know: one line each
	// Verify, if set, checks after the changes are written that the
	// runtime reads them (setup podman asks podman where it reads hooks).
	Verify func() error
}

// dropIn reports whether containerd reads a drop-in without losing the
// main config's settings of the same plugins: from 2.1 on it merges
// plugin tables key by key; before, an imported file's plugin table
// replaces the main file's whole table (containerd#5837), so setup edits
// the main file instead.
func (c *Containerd) dropIn() bool { return c.Version.atLeast(2, 1) }

// Plan reads the files and returns the changes; none when containerd is
// wired already.
func (c *Containerd) Plan() (*Plan, error) {
	switch {
	case c.CRI == CRINRI && c.Version.Major < 2:
		return nil, fmt.Errorf("containerd %s: NRI plugins are for containerd 2.x here; use --cri %s", c.Version, CRIRuntimeClass)
	case c.CRI != CRINRI && c.CRI != CRIRuntimeClass:
		return nil, fmt.Errorf("--cri %q: want %s or %s", c.CRI, CRINRI, CRIRuntimeClass)
	}
	main, err := readOptional(c.Config)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if main != nil {
		if doc, err = parseTOML(c.Config, main); err != nil {
			return nil, err
		}
	}
	version := configVersion(doc, main != nil, c.Version)
	p := &Plan{}
	if c.dropIn() {
		err = c.planDropIn(p, main, doc, max(version, 3))
	} else {
		err = c.planEdit(p, main, version)
	}
	if err != nil {
		return nil, err
	}
	if c.CRI == CRIRuntimeClass && version >= 3 {
		if err := c.planBaseSpec(p); err != nil {
			return nil, err
		}
	}
	c.notes(p)
	return p, nil
}

// configVersion is the config version containerd reads the main file as:
// its version key; 1 for an existing file without one (containerd's
// rule); for a new file, the version of this containerd.
func configVersion(doc map[string]any, exists bool, v Version) int64 {
	if n, ok := doc["version"].(int64); ok {
		return n
	}
	if exists && len(doc) > 0 {
		return 1
	}
	if v.Major >= 2 {
		return 3
	}
	return 2
}

// criPlugin is the CRI runtime plugin's name in a config of version v.
func criPlugin(v int64) string {
	switch v {
	case 1:
		return "cri"
	case 2:
		return "io.containerd.grpc.v1.cri"
	}
	return "io.containerd.cri.v1.runtime"
}

var nriPath = []string{"plugins", "io.containerd.nri.v1.nri"}

// tables are the settings for a config of version v.
func (c *Containerd) tables(v int64) []table {
	if c.CRI == CRINRI {
		ts := []table{{path: nriPath, keys: []keyValue{{"disable", false}, {"socket_path", c.NRISocket}}}}
		if c.required() {
			ts = append(ts, table{path: append(slices.Clone(nriPath), "default_validator"),
				keys: []keyValue{{"enable", true}, {"required_plugins", []string{"northstar"}}}})
		}
		return ts
	}
	rt := table{path: []string{"plugins", criPlugin(v), "containerd", "runtimes", "northstar"},
		keys: []keyValue{{"runtime_type", "io.containerd.northstar.v2"}, {"runtime_path", c.Shim}}}
	if v >= 3 {
		rt.keys = append(rt.keys, keyValue{"base_runtime_spec", c.BaseSpec})
	}
	return []table{rt}
}

// required: the plugin goes into required_plugins (containerd 2.2+).
func (c *Containerd) required() bool {
	return c.CRI == CRINRI && !c.FailOpen && c.Version.atLeast(2, 2)
}

func (c *Containerd) header() string {
	return "# Written by 'northstarctl setup containerd' (containerd " + c.Version.String() + ", --cri " + c.CRI + ").\n" +
		"# Run it again to bring this file up to date; remove the file to unwire northstar.\n"
}

// planDropIn writes the drop-in and makes the main config import it.
//
// The drop-in has the main config's version (3 or later: containerd 2.4
// writes 4), so that containerd does not migrate it at every start.
func (c *Containerd) planDropIn(p *Plan, main []byte, doc map[string]any, version int64) error {
	path := filepath.Join(c.DropIns, DropInName)
	want := []byte(c.header() + "version = " + strconv.FormatInt(version, 10) + "\n\n" + render(c.tables(version)))
	if _, err := parseTOML(path, want); err != nil {
		return fmt.Errorf("internal error: the drop-in does not parse: %w", err)
	}
	old, err := readOptional(path)
	if err != nil {
		return err
	}
	if string(old) != string(want) {
		p.Changes = append(p.Changes, Change{Path: path, Old: old, New: want, Mode: 0o644, Why: "northstar's drop-in"})
	}
	// The main config must import the drop-in's directory.
	glob := filepath.Join(c.DropIns, "*.toml")
	if imported(doc["imports"], path) {
		return nil
	}
	var edited []byte
	if main == nil {
		edited = []byte("# Written by 'northstarctl setup containerd': the defaults, and the drop-ins in " + c.DropIns + ".\nversion = 3\nimports = [" + strconv.Quote(glob) + "]\n")
	} else if edited, err = addImport(c.Config, main, glob); err != nil {
		return err
	}
	after, err := parseTOML(c.Config, edited)
	if err != nil || !imported(after["imports"], path) || doc != nil && !sameExcept(doc, after, leafKey(nil, "imports")) {
		return fmt.Errorf("%s: cannot add %q to its imports safely; add it yourself and run setup again", c.Config, glob)
	}
	p.Changes = append(p.Changes, Change{Path: c.Config, Old: main, New: edited, Mode: 0o644, Why: "import " + glob})
	return nil
}

// imported reports whether an imports value names path, by itself or by
// a glob, as containerd resolves them.
func imported(v any, path string) bool {
	list, _ := v.([]any)
	for _, x := range list {
		pattern, _ := x.(string)
		if ok, _ := filepath.Match(filepath.Clean(pattern), path); ok {
			return true
		}
	}
	return false
}

var (
	tableHeaderRE = regexp.MustCompile(`^\s*\[`)
	versionKeyRE  = regexp.MustCompile(`^\s*version\s*=`)
	importsKeyRE  = regexp.MustCompile(`^(\s*imports\s*=\s*\[)(.*)\](\s*(#.*)?)$`)
	importsOpenRE = regexp.MustCompile(`^\s*imports\s*=`)
)

// addImport adds glob to the main config's top-level imports: to an
// imports array on one line, else as a new imports line after version
// (top-level keys come before the first table).
func addImport(path string, data []byte, glob string) ([]byte, error) {
	ls := strings.SplitAfter(string(data), "\n")
	insert := 0
	for i, l := range ls {
		if tableHeaderRE.MatchString(l) {
			break
		}
		if m := importsKeyRE.FindStringSubmatch(strings.TrimRight(l, "\n")); m != nil {
			items := strings.TrimSpace(m[2])
			if items != "" && !strings.HasSuffix(items, ",") {
				items += ", "
			}
			ls[i] = m[1] + items + strconv.Quote(glob) + "]" + m[3] + "\n"
			return []byte(strings.Join(ls, "")), nil
		}
		if importsOpenRE.MatchString(l) {
			return nil, fmt.Errorf("%s: line %d: imports spans several lines; add %q to it and run setup again", path, i+1, glob)
		}
		if versionKeyRE.MatchString(l) {
			insert = i + 1
		}
	}
	line := "imports = [" + strconv.Quote(glob) + "]\n"
	if insert > 0 && !strings.HasSuffix(ls[insert-1], "\n") {
		line = "\n" + line
	}
	ls = slices.Insert(ls, insert, line)
	return []byte(strings.Join(ls, "")), nil
}

// planEdit keeps northstar's settings in a marked block at the end of the
// main config (containerd before 2.1). Settings the rest of the file has
// already are not repeated; settings it has otherwise are refused.
func (c *Containerd) planEdit(p *Plan, main []byte, version int64) error {
	rest, err := withoutBlock(c.Config, main)
	if err != nil {
		return err
	}
	var doc map[string]any
	if len(rest) > 0 {
		if doc, err = parseTOML(c.Config, rest); err != nil {
			return err
		}
	}
	var add []table
	for _, t := range c.tables(version) {
		have, ok := lookup(doc, t.path)
		if !ok {
			add = append(add, t)
			continue
		}
		if err := compatible(c.Config, t, have); err != nil {
			return err
		}
	}
	text := string(rest)
	newVersion := len(doc) == 0 // containerd reads a file without version as version 1
	if newVersion {
		text = "version = " + strconv.FormatInt(version, 10) + "\n" + text
	}
	if len(add) > 0 {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		text += "\n" + blockBegin + "\n" + render(add) + blockEnd + "\n"
	}
	if text == string(main) {
		return nil
	}
	after, err := parseTOML(c.Config, []byte(text))
	if err != nil {
		return fmt.Errorf("%s: northstar's settings clash with the file (%v); remove its northstar settings and run setup again", c.Config, err)
	}
	var ours []string
	for _, t := range add {
		for _, kv := range t.keys {
			ours = append(ours, leafKey(t.path, kv.key))
		}
	}
	if newVersion {
		ours = append(ours, leafKey(nil, "version"))
	}
	if doc != nil && !sameExcept(doc, after, ours...) {
		return fmt.Errorf("%s: adding northstar's settings would change others; add them yourself (see 'northstarctl config containerd')", c.Config)
	}
	p.Changes = append(p.Changes, Change{Path: c.Config, Old: main, New: []byte(text), Mode: 0o644, Why: "northstar's settings"})
	return nil
}

// withoutBlock returns data without northstar's block (and the blank line
// before it).
func withoutBlock(path string, data []byte) ([]byte, error) {
	s := string(data)
	i := strings.Index(s, blockBegin)
	if i < 0 {
		return data, nil
	}
	j := strings.Index(s[i:], blockEnd+"\n")
	if j < 0 {
		return nil, fmt.Errorf("%s: northstar's block has no end line %q; restore it from a backup (*.northstar-*.bak) or remove the block", path, blockEnd)
	}
	before := strings.TrimSuffix(s[:i], "\n")
	return []byte(before + s[i+j+len(blockEnd)+1:]), nil
}

// compatible checks a table the rest of the file has already: every key
// northstar sets is there with its value, or absent where containerd's
// default is the same.
func compatible(path string, t table, have map[string]any) error {
	defaults := map[string]any{"disable": false, "socket_path": "/var/run/nri/nri.sock"}
	for _, kv := range t.keys {
		v, ok := have[kv.key]
		if !ok {
			if d, known := defaults[kv.key]; known && equalValue(d, kv.val) {
				continue
			}
			return fmt.Errorf("%s: [%s] lacks %s = %s; add it there and run setup again", path, headerPath(t.path), kv.key, literal(kv.val))
		}
		if !equalValue(v, kv.val) {
			return fmt.Errorf("%s: [%s] has %s = %v, northstar needs %s; change it and run setup again", path, headerPath(t.path), kv.key, v, literal(kv.val))
		}
	}
	return nil
}

func (c *Containerd) planBaseSpec(p *Plan) error {
	old, err := readOptional(c.BaseSpec)
	if err != nil {
		return err
	}
	if string(old) != string(c.BaseSpecJSON) {
		p.Changes = append(p.Changes, Change{Path: c.BaseSpec, Old: old, New: c.BaseSpecJSON, Mode: 0o644, Why: "the base runtime spec of the northstar runtime handler"})
	}
	return nil
}

func (c *Containerd) notes(p *Plan) {
	switch {
	case c.CRI == CRIRuntimeClass:
		p.Notes = append(p.Notes, "Kubernetes: pods with runtimeClassName of a RuntimeClass whose handler is \"northstar\" get the secret")
	case c.required():
		p.Notes = append(p.Notes, "NRI: every CRI container gets the hook from the agent's plugin; while the plugin is away, pod starts fail (required_plugins)")
	case c.FailOpen:
		p.Notes = append(p.Notes, "NRI: --fail-open: containers that start while the agent's plugin is away get no secret")
	default:
		p.Notes = append(p.Notes, "NRI: containerd "+c.Version.String()+" has no required_plugins (2.2+): containers that start while the agent's plugin is away get no secret")
	}
}

// readOptional reads a file; nil, nil when it does not exist.
func readOptional(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}
