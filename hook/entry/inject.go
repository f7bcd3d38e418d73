// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Inject makes want the one northstar hook of spec, at createRuntime,
// and reports whether spec changed. Every other hook keeps its stage and
// order.
//
// Whoever injects owns the northstar hook of the spec: an identical hook
// already in place is left alone (injection is idempotent); a
// stale one (another path, config or timeout) is replaced in place, and
// northstar hooks at other stages (prestart, createContainer, ...) are
// dropped, since running the hook twice would mount the secret twice.
func Inject(spec *specs.Spec, want specs.Hook) (changed bool) {
	if spec.Hooks == nil {
		spec.Hooks = &specs.Hooks{}
	}
	h := spec.Hooks
	if countNorthstar(h) == 1 && len(h.CreateRuntime) > 0 {
		for _, got := range h.CreateRuntime {
			if IsNorthstar(got) && sameHook(got, want) {
				return false
			}
		}
	}
	// Replace the first northstar createRuntime hook in place, else append.
	placed := false
	var cr []specs.Hook
	for _, got := range h.CreateRuntime {
		if !IsNorthstar(got) {
			cr = append(cr, got)
			continue
		}
		if !placed {
			cr = append(cr, want)
			placed = true
		}
	}
	if !placed {
		cr = append(cr, want)
	}
	h.CreateRuntime = cr
	h.Prestart = dropNorthstar(h.Prestart) //nolint:staticcheck // deprecated but still run by runc
	h.CreateContainer = dropNorthstar(h.CreateContainer)
	h.StartContainer = dropNorthstar(h.StartContainer)
	h.Poststart = dropNorthstar(h.Poststart)
	h.Poststop = dropNorthstar(h.Poststop)
	return true
}

func countNorthstar(h *specs.Hooks) int {
	n := 0
	for _, stage := range [][]specs.Hook{h.Prestart, h.CreateRuntime, h.CreateContainer, h.StartContainer, h.Poststart, h.Poststop} { //nolint:staticcheck
		for _, x := range stage {
			if IsNorthstar(x) {
				n++
			}
		}
	}
	return n
}

func dropNorthstar(hs []specs.Hook) []specs.Hook {
	if hs == nil {
		return nil
	}
	out := hs[:0:0]
	for _, x := range hs {
		if !IsNorthstar(x) {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		// Do not leave an empty stage behind ("prestart": []).
		return nil
	}
	return out
}

func sameHook(a, b specs.Hook) bool {
	if a.Path != b.Path || !reflect.DeepEqual(a.Args, b.Args) || !reflect.DeepEqual(a.Env, b.Env) {
		return false
	}
	if (a.Timeout == nil) != (b.Timeout == nil) {
		return false
	}
	return a.Timeout == nil || *a.Timeout == *b.Timeout
}

// criContainerType is the annotation CRI (containerd's and CRI-O's) sets to
// "sandbox" on a pod's pause container and "container" on its workloads.
const criContainerType = "io.kubernetes.cri.container-type"

// IsPodSandbox reports whether a spec's annotations mark a Kubernetes pod
// sandbox (the pause container): it runs no workload and gets no secret.
func IsPodSandbox(annotations map[string]string) bool {
	return annotations[criContainerType] == "sandbox"
}

// AnnotationAPIDisable opts a container out of the agent's API (the
// hook's policy, DESIGN.md §3): such a container gets no API directory,
// so no API environment either.
const AnnotationAPIDisable = "io.northstar.api.disable"

// The SPIFFE Workload API's address in a container the agent serves it to
// ([spiffe] trust_domain, DESIGN.md §14), in the variable go-spiffe, SPIRE,
// Envoy's and ghostunnel's clients and spiffe-helper read.
const (
	EnvSPIFFEEndpoint = "SPIFFE_ENDPOINT_SOCKET"
	SPIFFEEndpoint    = "unix:///run/northstar/api/spiffe.sock"
)

// APIEnv is what a container that gets the agent's API finds in its
// environment, with the config's [spiffe] trust_domain: where its
// Workload API is. The shim (Rewrite) and the NRI plugin set it.
func APIEnv(trustDomain string) []string {
	if trustDomain == "" {
		return nil
	}
	return []string{EnvSPIFFEEndpoint + "=" + SPIFFEEndpoint}
}

// Rewrite returns config.json data with want injected by Inject and, for
// a container that gets the agent's API (it does not opt out with
// AnnotationAPIDisable), the variables apiEnv ("NAME=value") in its
// process's environment, and whether anything changed (if not, data
// itself is returned). A variable the spec already sets is left as it is:
// whoever made the spec chose it (a container given another Workload API
// keeps it).
//
// Only the hooks, and the process when its env changes, are re-encoded;
// only they and the annotations are decoded. Every other member of the
// document is carried over byte for byte, in its order. Decoding the whole
// document into specs.Spec and encoding it back would silently drop every
// field this version of runtime-spec does not know (a newer containerd may
// write them); it also cost the shim a millisecond per start, most of it
// building encoding/json's decoders for the whole specs.Spec type tree in a
// fresh process (docs/performance.md). The members Rewrite does not read
// are checked to be JSON, not to be a valid spec: runc checks them when it
// reads the file.
//
// runc reads config.json with encoding/json, which matches member names
// case-insensitively and decodes repeated members one after the other
// into the same field. Rewrite reads the hooks, annotations and process
// env the same way, replaces every member runc would take for the hooks by
// one, last, and puts a changed env in the last process member.
//
// A Kubernetes pod sandbox (the pause container, marked by CRI's
// container-type annotation) runs no workload and gets no hook: that saves
// a hook run per pod, and the pod's containers get their own secret.
func Rewrite(data []byte, want specs.Hook, apiEnv ...string) ([]byte, bool, error) {
	members, err := splitObject(data)
	if err != nil {
		return nil, false, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	var spec specs.Spec
	var process *struct {
		Env []string `json:"env"`
	}
	lastProcess := -1
	for i, m := range members {
		var err error
		switch {
		case strings.EqualFold(m.key, "annotations"):
			err = json.Unmarshal(m.value, &spec.Annotations)
		case strings.EqualFold(m.key, "hooks"):
			err = json.Unmarshal(m.value, &spec.Hooks)
		case strings.EqualFold(m.key, "process"):
			err = json.Unmarshal(m.value, &process)
			lastProcess = i
		}
		if err != nil {
			return nil, false, fmt.Errorf("config.json is not an OCI spec: %s: %w", m.key, err)
		}
	}
	if IsPodSandbox(spec.Annotations) {
		return data, false, nil
	}
	hooksChanged := Inject(&spec, want)
	var env []string
	envChanged := false
	if len(apiEnv) > 0 && process != nil && spec.Annotations[AnnotationAPIDisable] != "true" {
		env, envChanged = withEnv(process.Env, apiEnv)
	}
	if !hooksChanged && !envChanged {
		return data, false, nil
	}
	var parts [][]byte
	for i, m := range members {
		switch {
		case hooksChanged && strings.EqualFold(m.key, "hooks"):
			continue
		case envChanged && i == lastProcess:
			p, err := withProcessEnv(m, env)
			if err != nil {
				return nil, false, err
			}
			parts = append(parts, p)
		default:
			parts = append(parts, m.text)
		}
	}
	if hooksChanged {
		hooks, err := marshalNoEscape(spec.Hooks)
		if err != nil {
			return nil, false, fmt.Errorf("encode hooks: %w", err)
		}
		parts = append(parts, append([]byte(`"hooks":`), hooks...))
	}
	out := make([]byte, 0, len(data)+512)
	out = append(out, '{')
	out = append(out, bytes.Join(parts, []byte(","))...)
	return append(out, "}\n"...), true, nil
}

// withProcessEnv returns the process member m with its env set to env
// (every member runc would take for the env replaced by one).
func withProcessEnv(m member, env []string) ([]byte, error) {
	var process map[string]json.RawMessage
	if err := json.Unmarshal(m.value, &process); err != nil {
		return nil, fmt.Errorf("config.json process: %w", err)
	}
	for k := range process {
		if strings.EqualFold(k, "env") {
			delete(process, k)
		}
	}
	var err error
	if process["env"], err = marshalNoEscape(env); err != nil {
		return nil, fmt.Errorf("encode process env: %w", err)
	}
	value, err := marshalNoEscape(process)
	if err != nil {
		return nil, fmt.Errorf("encode process: %w", err)
	}
	key, err := marshalNoEscape(m.key)
	if err != nil {
		return nil, fmt.Errorf("encode process: %w", err)
	}
	return append(append(key, ':'), value...), nil
}

// member is one member of a JSON object: its name, its value, and its text
// as it appears in the document ("name": value).
type member struct {
	key         string
	value, text []byte
}

// splitObject returns the members of the JSON object data, in order,
// repeated names included. Anything but one object is an error.
func splitObject(data []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var members []member
	for dec.More() {
		// InputOffset is where the previous value (or the opening
		// brace) ended: what follows is a comma, the name and the value.
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string) // in an object, a name comes first
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		text := bytes.TrimLeft(data[start:dec.InputOffset()], ", \t\r\n")
		members = append(members, member{key: key, value: value, text: text})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the object")
	}
	return members, nil
}

// withEnv returns env with each of add whose name env does not set yet
// appended, and whether it added any.
func withEnv(env, add []string) ([]string, bool) {
	out := env
	changed := false
	for _, kv := range add {
		name, _, _ := strings.Cut(kv, "=")
		set := false
		for _, e := range env {
			if n, _, _ := strings.Cut(e, "="); n == name {
				set = true
				break
			}
		}
		if !set {
			out = append(out[:len(out):len(out)], kv)
			changed = true
		}
	}
	return out, changed
}

// marshalNoEscape encodes v as JSON without escaping <, > and &, as the
// rest of the document is written.
func marshalNoEscape(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
