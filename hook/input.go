// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/capped"
)

// maxStateSize caps the OCI state on stdin: a few hundred bytes in practice.
// The bundle's config.json is capped at entry.MaxBundleConfigSize.
const maxStateSize = 64 << 10

// ParseState decodes and checks the OCI state the runtime passes on stdin.
func ParseState(data []byte) (*specs.State, error) {
	if len(data) > maxStateSize {
		return nil, fmt.Errorf("state is larger than %d bytes", maxStateSize)
	}
	var st specs.State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("state is not OCI state JSON: %w", err)
	}
	switch {
	case st.ID == "":
		return nil, errors.New("state has no container id")
	case st.Pid <= 0:
		return nil, fmt.Errorf("state has no container pid (got %d); configure the hook at createRuntime (crun 1.8 passes no pid at createContainer)", st.Pid)
	case !filepath.IsAbs(st.Bundle):
		return nil, fmt.Errorf("state bundle %q is not an absolute path", st.Bundle)
	}
	return &st, nil
}

// LoadSpec reads the bundle's config.json and returns the parts the hook uses
// (root, process user, annotations) with the absolute path of the container
// root filesystem (a relative root.path is relative to the bundle). Decoding
// only those fields skips building the seccomp profile and mount list that
// make up most of a containerd spec: this runs on every container start.
func LoadSpec(bundle string) (*specs.Spec, string, error) {
	spec, rootfs, _, err := loadSpec(bundle)
	return spec, rootfs, err
}

// loadSpec is LoadSpec, and the config.json bytes it parsed.
func loadSpec(bundle string) (*specs.Spec, string, []byte, error) {
	data, err := capped.ReadFile(filepath.Join(bundle, "config.json"), entry.MaxBundleConfigSize, "bundle config.json")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, "", nil, fmt.Errorf("open bundle config: %w", err)
		}
		return nil, "", nil, err
	}
	spec, rootfs, err := parseSpec(bundle, data)
	return spec, rootfs, data, err
}

// parseSpec decodes the parts of config.json the hook uses.
func parseSpec(bundle string, data []byte) (*specs.Spec, string, error) {
	var doc struct {
		Root    *specs.Root `json:"root"`
		Process *struct {
			User specs.User `json:"user"`
		} `json:"process"`
		Annotations map[string]string `json:"annotations"`
		// Only the stage splitStages looks at.
		Hooks *struct {
			CreateContainer []specs.Hook `json:"createContainer"`
		} `json:"hooks"`
		// Only the namespaces (joinedMountNamespace).
		Linux *struct {
			Namespaces []specs.LinuxNamespace `json:"namespaces"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, "", fmt.Errorf("bundle config.json is not an OCI spec: %w", err)
	}
	spec := specs.Spec{Root: doc.Root, Annotations: doc.Annotations}
	if doc.Hooks != nil {
		spec.Hooks = &specs.Hooks{CreateContainer: doc.Hooks.CreateContainer}
	}
	if doc.Linux != nil {
		spec.Linux = &specs.Linux{Namespaces: doc.Linux.Namespaces}
	}
	if doc.Process != nil {
		spec.Process = &specs.Process{User: doc.Process.User}
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, "", errors.New("bundle config.json has no root.path")
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	return &spec, filepath.Clean(rootfs), nil
}
