// SPDX-License-Identifier: Apache-2.0

// Package hookname names northstar's hook binaries and their flags: a
// leaf, so that northstar-agent-hook, whose process costs what it links,
// can name them without linking how the hook is put into a spec (package
// hook/entry, which re-exports them).
package hookname

// Hook is the file name of the northstar hook binary (cmd/northstar-hook).
const Hook = "northstar-hook"

// AgentHook is the file name of the hook for hosts where the agent runs
// (cmd/northstar-agent-hook): it has the agent do the hook's work, and
// becomes Hook for the starts the agent does not serve.
const AgentHook = "northstar-agent-hook"

// HostWideFlag marks a hook file installed for every user of the host (the
// Debian package's /usr/share/containers/oci/hooks.d/northstar.json,
// which podman reads for rootless users too), not one a user asked for:
// the hook leaves a rootless user who has no config of their own alone.
const HostWideFlag = "--host-wide"
