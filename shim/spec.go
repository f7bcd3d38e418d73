package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/capped"
)

// injectHook makes want the one northstar hook of spec, at createRuntime,
// and reports whether spec changed. Every other hook keeps its stage and
// order.
//
// The shim owns the northstar hook of the containers it creates: an
// identical hook already in place is left alone (Create is idempotent); a
// stale one (another path, config or timeout) is replaced in place, and
// northstar hooks at other stages (prestart, createContainer, ...) are
// dropped, since running the hook twice would mount the secret twice.
func injectHook(spec *specs.Spec, want specs.Hook) (changed bool) {
	if spec.Hooks == nil {
		spec.Hooks = &specs.Hooks{}
	}
	h := spec.Hooks
	if countNorthstar(h) == 1 && len(h.CreateRuntime) > 0 {
		for _, got := range h.CreateRuntime {
			if entry.IsNorthstar(got) && sameHook(got, want) {
				return false
			}
		}
	}
	// Replace the first northstar createRuntime hook in place, else append.
	placed := false
	var cr []specs.Hook
	for _, got := range h.CreateRuntime {
		if !entry.IsNorthstar(got) {
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
			if entry.IsNorthstar(x) {
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
		if !entry.IsNorthstar(x) {
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

// rewriteSpec returns config.json data with want injected by injectHook,
// and whether anything changed (if not, data itself is returned).
//
// Only the "hooks" member is re-encoded. Decoding the whole document into
// specs.Spec and encoding it back would silently drop every field this
// version of runtime-spec does not know (a newer containerd may write
// them), so the rest of the document is carried over as raw JSON.
//
// A Kubernetes pod sandbox (the pause container, marked by CRI's
// container-type annotation) runs no workload and gets no hook: that saves
// a hook run per pod, and the pod's containers get their own secret.
func rewriteSpec(data []byte, want specs.Hook) ([]byte, bool, error) {
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, false, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	if spec.Annotations[criContainerType] == "sandbox" {
		return data, false, nil
	}
	if !injectHook(&spec, want) {
		return data, false, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, false, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	hooks, err := json.Marshal(spec.Hooks)
	if err != nil {
		return nil, false, fmt.Errorf("encode hooks: %w", err)
	}
	doc["hooks"] = hooks
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, false, fmt.Errorf("encode config.json: %w", err)
	}
	return buf.Bytes(), true, nil
}

// injectIntoBundle adds the northstar hook to bundle/config.json, replacing
// the file atomically (temp file in the bundle, rename) so runc never reads
// half a spec. It keeps the file's mode.
//
// No fsync (atomicfile.Replace, not Write): runc reads the file from the
// page cache right after, rename alone keeps readers from seeing half a
// spec, and after a host crash nothing reuses the bundle (containerd
// creates it afresh and the hook is injected again). A torn file could only
// make runc refuse to parse it: fail closed. The fsyncs cost 0.4-0.8 ms per
// start; docs/performance.md has the measurement.
func injectIntoBundle(bundle string, want specs.Hook) (changed bool, err error) {
	path := filepath.Join(bundle, "config.json")
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("open bundle config: %w", err)
	}
	data, err := capped.ReadFile(path, entry.MaxBundleConfigSize, "bundle config.json")
	if err != nil {
		return false, err
	}
	out, changed, err := rewriteSpec(data, want)
	if err != nil || !changed {
		return false, err
	}
	if err := atomicfile.Replace(path, out, fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("rewrite bundle config: %w", err)
	}
	return true, nil
}

// configPath is the config the shim and its hook use: NORTHSTAR_CONFIG from
// containerd's environment, else the rootful or rootless default. It must be
// absolute: the hook runs with the bundle as its working directory.
func configPath() (string, error) {
	p := config.Discover("")
	if !filepath.IsAbs(p) {
		return "", errors.New(config.EnvConfig + "=" + p + " is not an absolute path")
	}
	return filepath.Clean(p), nil
}
