package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook"
	"github.com/northstar-oci/northstar/secretfs/atomicfile"
)

// HookName is the file name of the northstar OCI hook; see hook.Name.
const HookName = hook.Name

// maxBundleConfigSize caps the config.json we read; the hook refuses larger
// ones too (4 MiB).
const maxBundleConfigSize = 4 << 20

// Hook returns the createRuntime hook entry the shim injects.
func Hook(hookPath, configPath string) specs.Hook { return hook.Entry(hookPath, configPath) }

// IsNorthstarHook reports whether h runs the northstar hook binary.
func IsNorthstarHook(h specs.Hook) bool {
	return filepath.Base(h.Path) == HookName
}

// InjectHook makes want the one northstar hook of spec, at createRuntime,
// and reports whether spec changed. Every other hook keeps its stage and
// order.
//
// The shim owns the northstar hook of the containers it creates: an
// identical hook already in place is left alone (Create is idempotent); a
// stale one (another path, config or timeout) is replaced in place, and
// northstar hooks at other stages (prestart, createContainer, ...) are
// dropped, since running the hook twice would mount the secret twice.
func InjectHook(spec *specs.Spec, want specs.Hook) (changed bool) {
	if spec.Hooks == nil {
		spec.Hooks = &specs.Hooks{}
	}
	h := spec.Hooks
	if countNorthstar(h) == 1 && len(h.CreateRuntime) > 0 {
		for _, got := range h.CreateRuntime {
			if IsNorthstarHook(got) && sameHook(got, want) {
				return false
			}
		}
	}
	// Replace the first northstar createRuntime hook in place, else append.
	placed := false
	var cr []specs.Hook
	for _, got := range h.CreateRuntime {
		if !IsNorthstarHook(got) {
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
			if IsNorthstarHook(x) {
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
		if !IsNorthstarHook(x) {
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

// RewriteSpec returns config.json data with want injected by InjectHook,
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
func RewriteSpec(data []byte, want specs.Hook) ([]byte, bool, error) {
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, false, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	if spec.Annotations[criContainerType] == "sandbox" {
		return data, false, nil
	}
	if !InjectHook(&spec, want) {
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
// half a spec. It keeps the file's mode. See replaceUnsynced for why there
// is no fsync.
func injectIntoBundle(bundle string, want specs.Hook) (changed bool, err error) {
	path := filepath.Join(bundle, "config.json")
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open bundle config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat bundle config: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBundleConfigSize+1))
	if err != nil {
		return false, fmt.Errorf("read bundle config: %w", err)
	}
	if len(data) > maxBundleConfigSize {
		return false, fmt.Errorf("bundle config.json is larger than %d bytes", maxBundleConfigSize)
	}
	out, changed, err := RewriteSpec(data, want)
	if err != nil || !changed {
		return false, err
	}
	if err := replaceUnsynced(path, out, fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("rewrite bundle config: %w", err)
	}
	return true, nil
}

// replaceUnsynced replaces path with data through a temporary file in the
// same directory and a rename, like atomicfile.Write but without its two
// fsyncs (file and directory): together 0.4-0.8 ms on the critical path of
// every container start on an ext4 state dir (make bench, November 2026).
//
// Why the rewrite of config.json needs atomicity but not durability:
//   - Atomicity is what protects the container: rename(2) swaps the name in
//     one step, so runc (or anyone) opening config.json sees the complete
//     old spec or the complete new one, never a mix. That holds without
//     fsync; fsync only decides what is on disk after a crash of the host.
//   - runc reads the file after this returns, from the page cache: it sees
//     the new spec whether or not it reached the disk.
//   - After a host crash nothing reuses this file: containerd's task state
//     (the bundle) is normally on tmpfs (/run, $XDG_RUNTIME_DIR) and is gone;
//     where it is on disk, containerd's start-up cleans up the bundles of
//     dead shims, and a container is only ever created again through a new
//     Create, which writes config.json afresh and injects the hook again.
//     A config.json torn by the crash (e.g. empty) could only make runc fail
//     to parse it: fail closed, never a container without the hook.
//   - containerd itself writes config.json without fsync, so a synced
//     rewrite bought no durability of the bundle as a whole.
//   - The file holds no secret (the hook fetches it), so there is nothing
//     to protect at rest either.
//
// The temporary file is created O_EXCL with the target's mode and removed
// if anything fails before the rename.
func replaceUnsynced(path string, data []byte, perm os.FileMode) error {
	return atomicfile.Replace(path, data, perm)
}

// hookPath finds the northstar-hook binary: next to the shim (the normal
// install puts both in one directory), else on PATH. The result is absolute:
// runc execs hook paths as given.
func hookPath() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), HookName)
		if isExecutable(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath(HookName)
	if err != nil {
		return "", fmt.Errorf("%s is neither next to the shim nor on PATH", HookName)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("find %s: %w", HookName, err)
	}
	return abs, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
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
