// SPDX-License-Identifier: Apache-2.0

// Package entry is the northstar hook as runtimes are told to run it: its
// binary name and where to find it, the hook entry (path, args, env,
// timeout) that the shim injects into config.json and `northstarctl config`
// prints, and the size cap on the bundle config.json both the hook and the
// shim read. It is separate from package hook so that the shim and
// northstarctl do not link the hook's mount and path-resolution code.
package entry

import (
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/hookname"
	"github.com/northstar-oci/northstar/internal/binpath"
)

// Name is the file name of the northstar hook binary. A hook whose path has
// this base name or AgentName, at any stage, is ours.
const Name = hookname.Hook

// AgentName is the file name of the hook for hosts where the agent runs
// (cmd/northstar-agent-hook): it has the agent do the hook's work, and
// becomes Name for the starts the agent does not serve.
const AgentName = hookname.AgentHook

// Timeout is the timeout (seconds) runtimes give the hook: generous for a
// slow hardware TPM shared by many starting containers.
const Timeout = 30

// MaxBundleConfigSize caps the bundle's config.json as the hook and the shim
// read it: containerd specs with large seccomp profiles reach ~100 KiB.
const MaxBundleConfigSize = 4 << 20

// env is the hook's whole environment: nothing is inherited from the
// runtime, so LD_PRELOAD and friends never reach it.
var env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// New returns the hook entry that runs the hook at hookPath with the config
// at configPath.
func New(hookPath, configPath string) specs.Hook {
	timeout := Timeout
	return specs.Hook{
		Path:    hookPath,
		Args:    []string{filepath.Base(hookPath), "--config", configPath},
		Env:     append([]string(nil), env...),
		Timeout: &timeout,
	}
}

// IsNorthstar reports whether h runs a northstar hook binary (Name or
// AgentName).
func IsNorthstar(h specs.Hook) bool {
	base := filepath.Base(h.Path)
	return base == Name || base == AgentName
}

// Find returns the absolute path of the hook binary: next to the running
// executable (the shim, northstarctl), else on PATH.
func Find() (string, error) { return binpath.Find(Name) }

// HostWideFlag marks a hook file installed for every user of the host
// (package hookname).
const HostWideFlag = hookname.HostWideFlag

// UserConfig is where a rootless user's own config is looked for, under
// their home, when the hook runs from a host-wide hook file.
const UserConfig = ".config/northstar/config.toml"
