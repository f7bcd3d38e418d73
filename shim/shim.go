// SPDX-License-Identifier: Apache-2.0

// Package shim is containerd-shim-northstar-v2 (runtime type
// io.containerd.northstar.v2): a thin wrapper around the host's own runc
// shim. It links no containerd shim library, so it works with whatever
// containerd and runc shim the host has (DESIGN.md §6).
//
// containerd runs the shim binary for each action. For `start` (run for
// every new container, with containerd as parent and the bundle, its
// config.json already written, as working directory) the wrapper
//
//   - rotates the lifecycle secret when containerd is not the process the
//     stored secret was made for (a restarted containerd starts a new
//     secret lifecycle; see lifecycle.ID), exactly once however many shims
//     start at the same moment;
//   - with the agent running, has it prepare the container's secret
//     filesystem and API directory and adds bind mounts of them to the
//     bundle's config.json, which runc mounts: no hook runs (mounts.go);
//     else, or where that is not safe (whyHook), adds the northstar
//     createRuntime hook (entry.Rewrite), except for a Kubernetes pod
//     sandbox;
//
// and then, for every action, execs the delegate (by default
// containerd-shim-runc-v2) with the same arguments, environment and stdin.
// The delegate's daemon serves containerd from then on; the wrapper is
// gone.
//
// Both steps fail closed: the delegate is not run, and containerd shows the
// one-line "northstar shim: ..." cause the wrapper printed. The wrapper
// never touches the secret itself; the agent or the hook does.
package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/northstar-oci/northstar/remedy"
)

// RuntimeName is the containerd runtime type; containerd maps it to the
// binary containerd-shim-northstar-v2 on its PATH.
const RuntimeName = "io.containerd.northstar.v2"

// Run is the shim's main: args without the program name, as containerd
// passed them. It returns only on failure: on success the process has
// become the delegate.
func Run(ctx context.Context, args []string) error {
	inv, err := parseArgs(args)
	if err != nil {
		return shimError(err)
	}
	runtime := findRuntime() // containerd, which runs these actions
	cfg, cfgErr := loadConfig()
	if inv.action == "start" && cfgErr != nil {
		return shimError(cfgErr)
	}
	// Other actions (delete, -v, -info) need only the delegate, and must
	// work even when the config is gone: containerd cleans up with them.
	delegate, err := findDelegate(cfg, runtime.exe)
	if err != nil {
		return shimError(err)
	}
	if inv.action == "start" {
		if err := prepareStart(ctx, cfg, inv, delegate, runtime.pid); err != nil {
			return shimError(err)
		}
	}
	return shimError(execDelegate(delegate, args))
}

// shimError makes err the one line containerd passes on to its client:
// prefixed, with its remedy, no newlines (ctr prints it as is).
func shimError(err error) error {
	return errors.New("northstar shim: " + oneLine(err))
}

// oneLine is err with its remedy, on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(remedy.Explain(err).Error(), "\n", "; ")), " ")
}

// invocation is what the wrapper needs from containerd's arguments.
type invocation struct {
	action string // "start", "delete", or "" (a flag-only call such as -v)
	bundle string // -bundle, else (for start) the working directory
	id     string // -id: the container's
}

// Flags containerd's shim protocol passes (runtime v2 shim.go, 1.6 to 2.x):
// those that take a value, and those that do not.
var (
	valueFlags = map[string]bool{"namespace": true, "id": true, "socket": true, "bundle": true, "address": true, "publish-binary": true}
	boolFlags  = map[string]bool{"debug": true, "v": true, "info": true}
)

// parseArgs finds the action and the bundle. It knows the flags of the shim
// protocol and refuses others: guessing whether an unknown flag takes a
// value could mistake an argument for the action and skip the hook.
func parseArgs(args []string) (invocation, error) {
	var inv invocation
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			if inv.action != "" {
				return inv, fmt.Errorf("unexpected argument %q after action %q", a, inv.action)
			}
			inv.action = a
			continue
		}
		if a == "--" {
			return inv, errors.New("unexpected argument \"--\"")
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case boolFlags[name]:
		case valueFlags[name] && hasValue:
		case valueFlags[name] && i+1 < len(args):
			i++
			value = args[i]
		case valueFlags[name]:
			return inv, fmt.Errorf("flag -%s needs a value", name)
		default:
			return inv, fmt.Errorf("unknown flag %q (not part of containerd's shim protocol)", a)
		}
		switch name {
		case "bundle":
			inv.bundle = value
		case "id":
			inv.id = value
		}
	}
	if inv.bundle == "" && inv.action == "start" {
		// Only start needs it: containerd runs other actions (-info, delete)
		// from directories that may be gone.
		wd, err := os.Getwd()
		if err != nil {
			return inv, fmt.Errorf("working directory (the bundle): %w", err)
		}
		inv.bundle = wd
	}
	return inv, nil
}
