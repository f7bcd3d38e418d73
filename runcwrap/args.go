// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// invocation is what the wrapper needs from the engine's arguments.
type invocation struct {
	command   string // the subcommand ("create", "state", ...); "" for a flag-only call (--version)
	bundle    string // create and run: the bundle directory ("" = the working directory)
	id        string // create and run: the container id
	pidFile   string // create and run: --pid-file, where the runtime writes the init pid
	help      bool   // create or run --help: nothing is created
	log       string // --log: runc's log file, where the engine looks for runc's errors
	logFormat string // --log-format: "text" (runc's default) or "json"
}

// prepares reports whether the invocation creates a container: the one
// moment the bundle's config.json is read.
func (inv invocation) prepares() bool {
	return (inv.command == "create" || inv.command == "run") && !inv.help
}

// The global flags of runc 1.1 (and 1.0, 1.2), and those crun adds, as
// engines pass them (Docker and containerd: --root, --log, --log-format,
// --systemd-cgroup; podman and CRI-O also --rootless, --cgroup-manager,
// --debug). Both parse flags the way Go's flag package does: one or two
// dashes, "--name value" or "--name=value", booleans only "--name" or
// "--name=bool".
var (
	globalValue = set("root", "log", "log-format", "criu", "rootless", "cgroup-manager", "log-level")
	globalBool  = set("debug", "systemd-cgroup", "help", "h", "version", "v")
)

// The flags of runc 1.1's `create` and `run` (crun's are a subset), whose
// values must be skipped to find the bundle. crun's --config/-f (a spec
// outside the bundle) is deliberately unknown, so refused: the hook would
// go into a file the runtime does not read.
var (
	createValue = set("bundle", "b", "console-socket", "pid-file", "preserve-fds")
	createBool  = set("no-pivot", "no-new-keyring", "help", "h")
	runValue    = createValue
	runBool     = set("no-pivot", "no-new-keyring", "help", "h", "detach", "d", "no-subreaper", "keep")
)

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// parseArgs reads the engine's arguments (without the program name) the
// way runc does: global flags up to the first argument that is not one
// (the subcommand); for create and run, that command's flags anywhere
// before "--" (runc's CLI library moves flags given after the container id
// in front of it), the bundle being --bundle or -b.
//
// Every flag must be known. Guessing whether an unknown flag takes a value
// could take its value for the subcommand, or a flag's value for the
// bundle: the wrapper would then skip the hook or put it into a file the
// runtime does not read, and the container would start without its secret.
// An unknown flag is refused instead (fail closed); a newer runc's flags are
// added here when they appear.
func parseArgs(args []string) (invocation, error) {
	var inv invocation
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || !isFlag(a) {
			break
		}
		name, value, hasValue := splitFlag(a)
		switch {
		case globalBool[name]:
			if hasValue && !isBool(value) {
				return inv, fmt.Errorf("flag %q: want true or false", a)
			}
		case globalValue[name]:
			if !hasValue {
				if i+1 >= len(args) {
					return inv, fmt.Errorf("flag %q needs a value", a)
				}
				i++
				value = args[i]
			}
			switch name {
			case "log":
				inv.log = value
			case "log-format":
				inv.logFormat = value
			}
		default:
			return inv, fmt.Errorf("unknown global flag %q: northstar-runtime knows runc's and crun's; pass it to the runtime directly", a)
		}
	}
	if i < len(args) && args[i] == "--" {
		i++
	}
	if i >= len(args) {
		return inv, nil
	}
	inv.command = args[i]
	var value, boolean map[string]bool
	switch inv.command {
	case "create":
		value, boolean = createValue, createBool
	case "run":
		value, boolean = runValue, runBool
	default:
		return inv, nil // passed through unread
	}
	for i++; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break // the rest are arguments, never flags
		}
		if !isFlag(a) {
			if inv.id == "" {
				inv.id = a // the container id
			}
			continue
		}
		name, v, hasValue := splitFlag(a)
		switch {
		case boolean[name]:
			if hasValue && !isBool(v) {
				return inv, fmt.Errorf("%s: flag %q: want true or false", inv.command, a)
			}
			if name == "help" || name == "h" {
				inv.help = !hasValue || v == "true" || v == "1" || v == "t" || v == "T" || v == "TRUE" || v == "True"
			}
		case value[name]:
			if !hasValue {
				if i+1 >= len(args) {
					return inv, fmt.Errorf("%s: flag %q needs a value", inv.command, a)
				}
				i++
				v = args[i]
			}
			switch name {
			case "bundle", "b":
				inv.bundle = v
			case "pid-file":
				inv.pidFile = v
			}
		default:
			return inv, fmt.Errorf("%s: unknown flag %q: northstar-runtime knows runc's and crun's; without knowing it, it cannot tell which bundle the runtime reads", inv.command, a)
		}
	}
	return inv, nil
}

// isFlag reports whether a is a flag as Go's flag package sees one: a dash
// and at least one more character ("-" alone is an argument).
func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// splitFlag returns the name and the "=value" part of a flag given with one
// or two dashes. A third dash is part of the name, which no runtime knows.
func splitFlag(a string) (name, value string, hasValue bool) {
	a = a[1:]
	if strings.HasPrefix(a, "-") {
		a = a[1:]
	}
	return strings.Cut(a, "=")
}

// isBool reports whether v is a value Go's strconv.ParseBool accepts.
func isBool(v string) bool {
	switch v {
	case "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False":
		return true
	}
	return false
}

// bundleDir is the bundle the runtime will read: --bundle, else (as runc
// does) the working directory.
func (inv invocation) bundleDir() (string, error) {
	if inv.bundle != "" {
		return inv.bundle, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory (the bundle): %w", err)
	}
	if wd == "" {
		return "", errors.New("working directory (the bundle) is unknown")
	}
	return wd, nil
}
