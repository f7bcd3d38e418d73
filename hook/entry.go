package hook

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Name is the file name of the northstar hook binary. A hook whose path has
// this base name, at any stage, is ours.
const Name = "northstar-hook"

// Timeout is the timeout (seconds) runtimes give the hook: generous for a
// slow hardware TPM shared by many starting containers.
const Timeout = 30

// env is the hook's whole environment: nothing is inherited from the
// runtime, so LD_PRELOAD and friends never reach it.
var env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// Entry is the hook as a runtime is told to run it: the shim injects it into
// config.json and `northstarctl config` prints it.
func Entry(hookPath, configPath string) specs.Hook {
	timeout := Timeout
	return specs.Hook{
		Path:    hookPath,
		Args:    []string{Name, "--config", configPath},
		Env:     append([]string(nil), env...),
		Timeout: &timeout,
	}
}
