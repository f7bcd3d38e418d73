package entry

import (
	"bytes"
	"encoding/json"
	"fmt"
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
// Only the "hooks" member, and the "env" of "process", are re-encoded.
// Decoding the whole document into specs.Spec and encoding it back would
// silently drop every field this version of runtime-spec does not know (a
// newer containerd may write them), so the rest of the document is carried
// over as raw JSON.
//
// A Kubernetes pod sandbox (the pause container, marked by CRI's
// container-type annotation) runs no workload and gets no hook: that saves
// a hook run per pod, and the pod's containers get their own secret.
func Rewrite(data []byte, want specs.Hook, apiEnv ...string) ([]byte, bool, error) {
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, false, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	if IsPodSandbox(spec.Annotations) {
		return data, false, nil
	}
	hooksChanged := Inject(&spec, want)
	var env []string
	envChanged := false
	if len(apiEnv) > 0 && spec.Process != nil && spec.Annotations[AnnotationAPIDisable] != "true" {
		env, envChanged = withEnv(spec.Process.Env, apiEnv)
	}
	if !hooksChanged && !envChanged {
		return data, false, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, false, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	if hooksChanged {
		hooks, err := json.Marshal(spec.Hooks)
		if err != nil {
			return nil, false, fmt.Errorf("encode hooks: %w", err)
		}
		doc["hooks"] = hooks
	}
	if envChanged {
		var process map[string]json.RawMessage
		if err := json.Unmarshal(doc["process"], &process); err != nil {
			return nil, false, fmt.Errorf("config.json process: %w", err)
		}
		var err error
		if process["env"], err = marshalNoEscape(env); err != nil {
			return nil, false, fmt.Errorf("encode process env: %w", err)
		}
		if doc["process"], err = marshalNoEscape(process); err != nil {
			return nil, false, fmt.Errorf("encode process: %w", err)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, false, fmt.Errorf("encode config.json: %w", err)
	}
	return buf.Bytes(), true, nil
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
