// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// testHook is the hook the table expects; testdata/ours-already.json holds
// exactly this one.
var testHook = New("/usr/local/bin/northstar-hook", "/etc/northstar/config.toml")

// stages lists the hook stages of a spec as a JSON tree, in spec order.
var stages = []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}

func TestRewriteSpec(t *testing.T) {
	tests := []struct {
		description string
		file        string
		wantChanged bool
		// createRuntime hook paths after injection, in order.
		wantCreateRuntime []string
	}{
		{
			description:       "containerd 1.6 spec for ctr run --rootfs: hooks created",
			file:              "containerd-1.6-rootfs.json",
			wantChanged:       true,
			wantCreateRuntime: []string{testHook.Path},
		},
		{
			description:       "containerd 1.6 spec from an image: hooks created",
			file:              "containerd-1.6-image.json",
			wantChanged:       true,
			wantCreateRuntime: []string{testHook.Path},
		},
		{
			description:       "other hooks at every stage are kept, ours appended at createRuntime",
			file:              "other-hooks.json",
			wantChanged:       true,
			wantCreateRuntime: []string{"/usr/libexec/oci/hooks.d/net-setup", "/usr/libexec/oci/hooks.d/audit", testHook.Path},
		},
		{
			description:       "our identical hook already there: file untouched",
			file:              "ours-already.json",
			wantChanged:       false,
			wantCreateRuntime: []string{"/usr/libexec/oci/hooks.d/net-setup", testHook.Path},
		},
		{
			description:       "stale northstar hook (old path, config, no env) replaced in place",
			file:              "stale-northstar.json",
			wantChanged:       true,
			wantCreateRuntime: []string{"/usr/libexec/oci/hooks.d/first", testHook.Path, "/usr/libexec/oci/hooks.d/last"},
		},
		{
			description:       "northstar hooks at prestart and createContainer dropped, one left at createRuntime",
			file:              "northstar-at-several-stages.json",
			wantChanged:       true,
			wantCreateRuntime: []string{testHook.Path},
		},
		{
			description:       "fields unknown to runtime-spec v1.1 survive the rewrite",
			file:              "future-fields.json",
			wantChanged:       true,
			wantCreateRuntime: []string{testHook.Path},
		},
	}
	for _, tt := range tests {
		t.Run(tt.description, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			out, changed, err := Rewrite(in, testHook)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if !changed && !bytes.Equal(out, in) {
				t.Error("unchanged spec was re-encoded")
			}
			inTree, outTree := jsonTree(t, in), jsonTree(t, out)

			// Everything but the hooks is the same JSON tree.
			inHooks, outHooks := inTree["hooks"], outTree["hooks"]
			delete(inTree, "hooks")
			delete(outTree, "hooks")
			if !reflect.DeepEqual(inTree, outTree) {
				t.Errorf("fields other than hooks changed:\nin:  %s\nout: %s", mustJSON(t, inTree), mustJSON(t, outTree))
			}

			// Exactly one northstar hook, ours, at createRuntime.
			var ns []any
			for _, st := range stages {
				for _, h := range hookList(outHooks, st) {
					if filepath.Base(h.(map[string]any)["path"].(string)) == Name {
						if st != "createRuntime" {
							t.Errorf("northstar hook left at %s", st)
						}
						ns = append(ns, h)
					}
				}
			}
			if len(ns) != 1 {
				t.Fatalf("%d northstar hooks, want exactly 1: %s", len(ns), mustJSON(t, outHooks))
			}
			if want := jsonTree(t, mustJSON(t, map[string]any{"h": testHook}))["h"]; !reflect.DeepEqual(ns[0], want) {
				t.Errorf("northstar hook = %s, want %s", mustJSON(t, ns[0]), mustJSON(t, want))
			}

			// Every other hook kept, same stage, same order, same content.
			for _, st := range stages {
				if got, want := othersThan(hookList(outHooks, st)), othersThan(hookList(inHooks, st)); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: other hooks = %s, want %s", st, mustJSON(t, got), mustJSON(t, want))
				}
			}
			var gotPaths []string
			for _, h := range hookList(outHooks, "createRuntime") {
				gotPaths = append(gotPaths, h.(map[string]any)["path"].(string))
			}
			if !reflect.DeepEqual(gotPaths, tt.wantCreateRuntime) {
				t.Errorf("createRuntime = %q, want %q", gotPaths, tt.wantCreateRuntime)
			}

			// Idempotent: a second Create of the same bundle changes nothing.
			again, changed, err := Rewrite(out, testHook)
			if err != nil || changed || !bytes.Equal(again, out) {
				t.Errorf("second injection: changed = %v, err = %v", changed, err)
			}

			// runc (Go) and the hook read the result as an OCI spec.
			var s specs.Spec
			if err := json.Unmarshal(out, &s); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRewriteSpecRejectsNonSpec(t *testing.T) {
	for _, in := range []string{``, `[]`, `7`, `{"annotations": 7}`, `{"hooks": {"createRuntime": "x"}}`, `{"Hooks": []}`, `{`,
		`{"process": }`, `{"a": 1} {"b": 2}`, `{"a": 1} x`} {
		if _, _, err := Rewrite([]byte(in), testHook); err == nil {
			t.Errorf("Rewrite(%q) accepted", in)
		}
	}
}

// TestRewriteReadsAsRunc: runc decodes config.json with encoding/json,
// which matches member names case-insensitively and decodes repeated
// members one after the other into the same field (a later hooks member
// replaces the stages it names, a later annotations member adds to the
// map). Whatever hooks runc would have run, it runs after Rewrite too,
// with ours added, and no member runc would take for hooks is left beside
// the new one.
func TestRewriteReadsAsRunc(t *testing.T) {
	other := `{"path":"/usr/libexec/oci/hooks.d/audit"}`
	sandbox := `{"io.kubernetes.cri.container-type":"sandbox"}`
	for _, in := range []string{
		`{"ociVersion":"1.1.0","Hooks":{"createRuntime":[` + other + `]}}`,
		`{"hooks":{"createRuntime":[` + other + `]},"hooks":{}}`,
		`{"hooks":{"createRuntime":[` + other + `]},"hooks":{"createRuntime":[]}}`,
		`{"hooks":{"prestart":[` + other + `]},"HOOKS":{"createRuntime":[` + other + `,` + other + `]}}`,
		`{"hooks":{"prestart":[` + other + `]},"hooks":null}`,
		`{"Annotations":` + sandbox + `}`,
		`{"annotations":` + sandbox + `,"annotations":{}}`,
		`{"annotations":` + sandbox + `,"annotations":null}`,
		`{"annotations":{"a":"b"},"ANNOTATIONS":` + sandbox + `}`,
		`{"process":{"env":["A=1"],"cwd":"/"},"process":{"cwd":"/x"}}`,
		`{"process":{"env":["A=1"]},"Process":{"ENV":["B=2"],"cwd":"/"}}`,
		`{"process":{"env":["A=1"]},"process":null}`,
	} {
		var want specs.Spec // as runc reads the input
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		wantChanged := !IsPodSandbox(want.Annotations) && Inject(&want, testHook)
		out, changed, err := Rewrite([]byte(in), testHook)
		if err != nil || changed != wantChanged {
			t.Errorf("%s: changed = %v, %v; want %v", in, changed, err, wantChanged)
			continue
		}
		if !changed {
			continue
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(out, &members); err != nil {
			t.Fatal(err)
		}
		for k := range members {
			if strings.EqualFold(k, "hooks") && k != "hooks" {
				t.Errorf("%s: member %q left beside the new hooks: %s", in, k, out)
			}
		}
		var got specs.Spec // as runc reads the output
		if err := json.Unmarshal(out, &got); err != nil || !reflect.DeepEqual(got.Hooks, want.Hooks) {
			t.Errorf("%s: runc reads hooks %s (%v), want %s", in, mustJSON(t, got.Hooks), err, mustJSON(t, want.Hooks))
		}
		if want.Process == nil {
			continue
		}
		// The API's variable lands in the env runc reads.
		out, _, err = Rewrite([]byte(in), testHook, spiffeEnv)
		got = specs.Spec{}
		if err := json.Unmarshal(out, &got); err != nil || got.Process == nil {
			t.Fatalf("%s: %v: %s", in, err, out)
		}
		wantEnv, _ := withEnv(want.Process.Env, []string{spiffeEnv})
		if !reflect.DeepEqual(got.Process.Env, wantEnv) || !reflect.DeepEqual(got.Process.Cwd, want.Process.Cwd) {
			t.Errorf("%s: runc reads env %q cwd %q, want %q %q", in, got.Process.Env, got.Process.Cwd, wantEnv, want.Process.Cwd)
		}
	}
}

// TestRewriteKeepsMembersVerbatim: members other than the hooks keep their
// bytes and their order (no re-encoding of a large seccomp profile).
func TestRewriteKeepsMembersVerbatim(t *testing.T) {
	in := `{ "ociVersion" : "1.1.0",
  "process": {"args": ["sh", "-c", "echo \u0041 <&>"], "env": []},
  "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}},
  "zzz-future": [1, 2.50, {"b": true, "a": null}] }`
	out, changed, err := Rewrite([]byte(in), testHook)
	if err != nil || !changed {
		t.Fatalf("changed = %v, %v", changed, err)
	}
	want := `{"ociVersion" : "1.1.0","process": {"args": ["sh", "-c", "echo \u0041 <&>"], "env": []},` +
		`"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}},"zzz-future": [1, 2.50, {"b": true, "a": null}],"hooks":`
	if !strings.HasPrefix(string(out), want) || !strings.HasSuffix(string(out), "}\n") {
		t.Errorf("Rewrite =\n%s\nwant it to start\n%s", out, want)
	}
}

func TestInjectHookTyped(t *testing.T) {
	other := specs.Hook{Path: "/bin/true"}
	tests := []struct {
		description string
		hooks       *specs.Hooks
		wantChanged bool
		want        *specs.Hooks
	}{
		{"nil hooks", nil, true, &specs.Hooks{CreateRuntime: []specs.Hook{testHook}}},
		{"empty hooks", &specs.Hooks{}, true, &specs.Hooks{CreateRuntime: []specs.Hook{testHook}}},
		{"identical", &specs.Hooks{CreateRuntime: []specs.Hook{testHook}}, false, &specs.Hooks{CreateRuntime: []specs.Hook{testHook}}},
		{
			"identical twice: deduplicated",
			&specs.Hooks{CreateRuntime: []specs.Hook{testHook, other, testHook}}, true,
			&specs.Hooks{CreateRuntime: []specs.Hook{testHook, other}},
		},
		{
			"other timeout is stale",
			&specs.Hooks{CreateRuntime: []specs.Hook{other, withTimeout(testHook, 5)}}, true,
			&specs.Hooks{CreateRuntime: []specs.Hook{other, testHook}},
		},
		{
			"no timeout is stale",
			&specs.Hooks{CreateRuntime: []specs.Hook{withTimeout(testHook, -1)}}, true,
			&specs.Hooks{CreateRuntime: []specs.Hook{testHook}},
		},
		{
			"a hook merely named like ours elsewhere in its path is not ours",
			&specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/opt/northstar-hook/bin/audit"}}}, true,
			&specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/opt/northstar-hook/bin/audit"}, testHook}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.description, func(t *testing.T) {
			s := &specs.Spec{Hooks: tt.hooks}
			if got := Inject(s, testHook); got != tt.wantChanged {
				t.Errorf("changed = %v, want %v", got, tt.wantChanged)
			}
			if !reflect.DeepEqual(s.Hooks, tt.want) {
				t.Errorf("hooks = %s, want %s", mustJSON(t, s.Hooks), mustJSON(t, tt.want))
			}
		})
	}
}

func TestRewriteSpecSkipsPodSandbox(t *testing.T) {
	for typ, wantChanged := range map[string]bool{"sandbox": false, "container": true} {
		in := []byte(`{"ociVersion":"1.1.0","root":{"path":"rootfs"},"annotations":{"io.kubernetes.cri.container-type":"` + typ + `"}}`)
		out, changed, err := Rewrite(in, testHook)
		if err != nil {
			t.Fatal(err)
		}
		if changed != wantChanged || (!changed && string(out) != string(in)) {
			t.Errorf("container-type %s: changed = %v, want %v", typ, changed, wantChanged)
		}
	}
}

func TestHookEntry(t *testing.T) {
	h := New("/opt/ns/bin/northstar-hook", "/home/u/.config/northstar/config.toml")
	want := `{"path":"/opt/ns/bin/northstar-hook","args":["northstar-hook","--config","/home/u/.config/northstar/config.toml"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"timeout":30}`
	if got := string(mustJSON(t, h)); got != want {
		t.Errorf("hook = %s\nwant   %s", got, want)
	}
}

func withTimeout(h specs.Hook, s int) specs.Hook {
	if s < 0 {
		h.Timeout = nil
		return h
	}
	h.Timeout = &s
	return h
}

func jsonTree(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hookList(hooks any, stage string) []any {
	m, _ := hooks.(map[string]any)
	l, _ := m[stage].([]any)
	return l
}

func othersThan(hs []any) []any {
	var out []any
	for _, h := range hs {
		if filepath.Base(h.(map[string]any)["path"].(string)) != Name {
			out = append(out, h)
		}
	}
	return out
}

func TestFindFromPATH(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, Name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	// The test binary has no northstar-hook next to it: PATH is used.
	if got, err := Find(); err != nil || got != p {
		t.Errorf("Find() = %q, %v; want %q", got, err, p)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := Find(); err == nil || !strings.Contains(err.Error(), "neither next to") {
		t.Errorf("no hook anywhere: err = %v", err)
	}
}

// FuzzRewrite feeds Rewrite arbitrary config.json documents. Whatever it
// accepts and changes must come out as JSON with exactly one northstar
// hook, the wanted one at createRuntime; every other hook in its stage and
// order; every other top-level member as it was (whitespace aside); and a
// second Rewrite must change nothing.
func FuzzRewrite(f *testing.F) {
	for _, name := range []string{"containerd-1.6-rootfs.json", "other-hooks.json", "northstar-at-several-stages.json", "stale-northstar.json", "ours-already.json"} {
		if data, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"ociVersion":"1.0.2","hooks":{"prestart":[{"path":"/x"}],"createRuntime":null}}`))
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, changed, err := Rewrite(data, testHook)
		if err != nil {
			return
		}
		if !changed {
			if !bytes.Equal(out, data) {
				t.Fatal("unchanged, but the data differ")
			}
			return
		}
		var before, after map[string]json.RawMessage
		if err := json.Unmarshal(data, &before); err != nil {
			t.Fatalf("accepted a non-object: %v", err)
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out)
		}
		for k, v := range before {
			if strings.EqualFold(k, "hooks") {
				continue
			}
			var want, got bytes.Buffer
			if json.Compact(&want, v) != nil || json.Compact(&got, after[k]) != nil || !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("member %q changed", k)
			}
		}
		// What Rewrite reads, as runc's encoding/json reads it (Rewrite
		// checks only the members it reads; runc checks the rest).
		var spec, orig runcView
		if err := json.Unmarshal(out, &spec); err != nil || spec.Hooks == nil {
			t.Fatalf("output hooks do not decode: %v", err)
		}
		if err := json.Unmarshal(data, &orig); err != nil {
			t.Fatalf("accepted hooks that do not decode: %v", err)
		}
		n := 0
		for _, stage := range []struct {
			name        string
			got, before []specs.Hook
		}{
			{"prestart", spec.Hooks.Prestart, hooksOf(orig.Hooks, "prestart")}, //nolint:staticcheck
			{"createRuntime", spec.Hooks.CreateRuntime, hooksOf(orig.Hooks, "createRuntime")},
			{"createContainer", spec.Hooks.CreateContainer, hooksOf(orig.Hooks, "createContainer")},
			{"startContainer", spec.Hooks.StartContainer, hooksOf(orig.Hooks, "startContainer")},
			{"poststart", spec.Hooks.Poststart, hooksOf(orig.Hooks, "poststart")},
			{"poststop", spec.Hooks.Poststop, hooksOf(orig.Hooks, "poststop")},
		} {
			var others, wantOthers []specs.Hook
			for _, h := range stage.got {
				if IsNorthstar(h) {
					n++
					if stage.name != "createRuntime" || !reflect.DeepEqual(h, testHook) {
						t.Fatalf("northstar hook %+v at %s", h, stage.name)
					}
					continue
				}
				others = append(others, h)
			}
			for _, h := range stage.before {
				if !IsNorthstar(h) {
					wantOthers = append(wantOthers, h)
				}
			}
			if len(others) != len(wantOthers) || (len(others) > 0 && !reflect.DeepEqual(asRuncReads(others), asRuncReads(wantOthers))) {
				t.Fatalf("%s: other hooks %+v, want %+v", stage.name, others, wantOthers)
			}
		}
		if n != 1 {
			t.Fatalf("%d northstar hooks, want 1", n)
		}
		if again, changed, err := Rewrite(out, testHook); err != nil || changed || !bytes.Equal(again, out) {
			t.Fatalf("second Rewrite: changed %v, %v", changed, err)
		}
		// With the API's variable: it is in the environment of a process
		// that gets the API, once, and nothing but the env changed there.
		withEnv, _, err := Rewrite(data, testHook, spiffeEnv)
		if err != nil {
			t.Fatalf("Rewrite with env failed where Rewrite did not: %v", err)
		}
		var envSpec runcView
		if err := json.Unmarshal(withEnv, &envSpec); err != nil {
			t.Fatalf("output with env does not decode: %v", err)
		}
		if orig.Process != nil && orig.Annotations[AnnotationAPIDisable] != "true" {
			n := 0
			for _, e := range envSpec.Process.Env {
				if strings.HasPrefix(e, EnvSPIFFEEndpoint+"=") {
					n++
				}
			}
			if set := slices.ContainsFunc(orig.Process.Env, func(e string) bool { return strings.HasPrefix(e, EnvSPIFFEEndpoint+"=") }); n != 1 || !set && !slices.Contains(envSpec.Process.Env, spiffeEnv) {
				t.Fatalf("env %q: want %s once", envSpec.Process.Env, EnvSPIFFEEndpoint)
			}
		}
		if again, changed, err := Rewrite(withEnv, testHook, spiffeEnv); err != nil || changed || !bytes.Equal(again, withEnv) {
			t.Fatalf("second Rewrite with env: changed %v, %v", changed, err)
		}
	})
}

// runcView is what Rewrite reads of a spec, decoded as runc decodes the
// whole spec (encoding/json into specs.Spec).
type runcView struct {
	Annotations map[string]string
	Hooks       *specs.Hooks
	Process     *struct{ Env []string }
}

// spiffeEnv is what the shim adds with [spiffe] trust_domain set.
var spiffeEnv = EnvSPIFFEEndpoint + "=" + SPIFFEEndpoint

// TestRewriteAddsTheAPIEnvironment: the API's variables join the process
// environment of a container that gets the API, once; a variable already
// set stays; a container without the API, without a process or a pod
// sandbox gets none; the rest of the process, fields unknown to
// runtime-spec included, stays as it was.
func TestRewriteAddsTheAPIEnvironment(t *testing.T) {
	future, err := os.ReadFile(filepath.Join("testdata", "future-fields.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(future, &doc); err != nil {
		t.Fatal(err)
	}
	withProcess := func(process string) []byte {
		d := maps.Clone(doc)
		d["process"] = json.RawMessage(process)
		out, _ := json.Marshal(d)
		return out
	}
	withAnnotation := func(v string) []byte {
		d := maps.Clone(doc)
		d["annotations"] = json.RawMessage(`{"` + AnnotationAPIDisable + `":"` + v + `"}`)
		out, _ := json.Marshal(d)
		return out
	}
	for _, tc := range []struct {
		description string
		in          []byte
		wantEnv     []string // nil: no env member
	}{
		{"appended to the spec's environment", future, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar", spiffeEnv}},
		{"a process without env gets one", withProcess(`{"args":["sh"],"cwd":"/","futureProcessField":{"x":1}}`), []string{spiffeEnv}},
		{"a value already set stays", withProcess(`{"args":["sh"],"cwd":"/","env":["SPIFFE_ENDPOINT_SOCKET=unix:///spire/agent.sock"]}`), []string{"SPIFFE_ENDPOINT_SOCKET=unix:///spire/agent.sock"}},
		{"an empty value set stays", withProcess(`{"args":["sh"],"cwd":"/","env":["SPIFFE_ENDPOINT_SOCKET="]}`), []string{"SPIFFE_ENDPOINT_SOCKET="}},
		{"no API, no variable", withAnnotation("true"), []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar"}},
		{"the API kept explicitly", withAnnotation("false"), []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar", spiffeEnv}},
	} {
		t.Run(tc.description, func(t *testing.T) {
			out, changed, err := Rewrite(tc.in, testHook, spiffeEnv)
			if err != nil || !changed {
				t.Fatalf("Rewrite: changed %v, %v", changed, err)
			}
			var spec specs.Spec
			if err := json.Unmarshal(out, &spec); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(spec.Process.Env, tc.wantEnv) {
				t.Errorf("env %q, want %q", spec.Process.Env, tc.wantEnv)
			}
			var before, after map[string]map[string]json.RawMessage
			json.Unmarshal(tc.in, &before)
			json.Unmarshal(out, &after)
			for k, v := range before["process"] {
				if k != "env" && !bytes.Equal(compact(t, v), compact(t, after["process"][k])) {
					t.Errorf("process member %q changed", k)
				}
			}
			if again, changed, err := Rewrite(out, testHook, spiffeEnv); err != nil || changed || !bytes.Equal(again, out) {
				t.Errorf("second Rewrite: changed %v, %v", changed, err)
			}
		})
	}
	sandbox := []byte(`{"process":{"args":["/pause"]},"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`)
	if out, changed, err := Rewrite(sandbox, testHook, spiffeEnv); err != nil || changed || !bytes.Equal(out, sandbox) {
		t.Errorf("pod sandbox: changed %v, %v", changed, err)
	}
	noProcess := []byte(`{"ociVersion":"1.0.2"}`)
	out, _, err := Rewrite(noProcess, testHook, spiffeEnv)
	if err != nil || bytes.Contains(out, []byte("process")) {
		t.Errorf("a spec without a process got one: %s, %v", out, err)
	}
}

func compact(t *testing.T, v json.RawMessage) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		t.Fatalf("%s: %v", v, err)
	}
	return b.Bytes()
}

// asRuncReads is hooks with their empty args and env as absent: the
// runtime-spec's fields are omitempty, so a hook Rewrite re-encodes
// without "args": [] is the hook runc reads from the original (an exec
// with no arguments is one with none given).
func asRuncReads(hooks []specs.Hook) []specs.Hook {
	out := make([]specs.Hook, len(hooks))
	for i, h := range hooks {
		if len(h.Args) == 0 {
			h.Args = nil
		}
		if len(h.Env) == 0 {
			h.Env = nil
		}
		out[i] = h
	}
	return out
}

func hooksOf(h *specs.Hooks, stage string) []specs.Hook {
	if h == nil {
		return nil
	}
	switch stage {
	case "prestart":
		return h.Prestart //nolint:staticcheck
	case "createRuntime":
		return h.CreateRuntime
	case "createContainer":
		return h.CreateContainer
	case "startContainer":
		return h.StartContainer
	case "poststart":
		return h.Poststart
	}
	return h.Poststop
}
