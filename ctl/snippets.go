// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/config/peek"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/binpath"
)

// criRuntimeTable is the CRI runtime table of a runtime named "northstar"
// for each containerd config version: 2 (containerd 1.6, 1.7) and 3 (2.x).
var criRuntimeTable = map[int]string{
	2: `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.northstar]`,
	3: `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.northstar]`,
}

// BaseSpecPath is where the containerd 2.x snippet expects the base runtime
// spec that `northstarctl config base-spec` prints.
const BaseSpecPath = "/etc/containerd/northstar-base-spec.json"

// baseSpecNote completes the runtime table per config version. containerd
// 2.x runs every container of a pod in the pod sandbox's shim without
// running the shim binary's `start` again, so the shim cannot add the hook
// to their config.json; CRI builds them from base_runtime_spec, which then
// carries it (and is not used for the sandbox itself).
var baseSpecNote = map[int]string{
	2: "",
	3: "  base_runtime_spec = " + fmt.Sprintf("%q", BaseSpecPath) + `
  # containerd 2.x starts a pod's containers in the sandbox's shim without the
  # shim's start, where the hook is added: CRI adds it from this base spec.
  # Make it (again whenever the hook or config path changes) with the ctr of
  # this containerd on PATH:
  #   northstarctl config base-spec > ` + BaseSpecPath + "\n",
}

// containerdConfigVersion is the config version of the containerd on PATH:
// 3 for containerd 2.x, else (1.x, or none found) 2.
func containerdConfigVersion() int {
	out, err := exec.Command("containerd", "--version").Output()
	if err != nil {
		return 2
	}
	// "containerd github.com/containerd/containerd/v2 v2.4.2 ..." or
	// "containerd containerd.io 1.6.20~ds1 ..."
	for _, f := range strings.Fields(string(out)) {
		v := strings.TrimPrefix(f, "v")
		if len(v) > 1 && v[0] >= '0' && v[0] <= '9' && v[1] == '.' {
			if v[0] >= '2' {
				return 3
			}
			return 2
		}
	}
	return 2
}

// baseSpec is containerd's default spec, from the ctr of the containerd it
// is for, with the hook added: a base_runtime_spec for CRI (see
// baseSpecNote).
func baseSpec(ctr, hookPath, cfgPath string) ([]byte, error) {
	out, err := exec.Command(ctr, "oci", "spec").Output()
	if err != nil {
		return nil, fmt.Errorf("'%s oci spec' (the ctr of your containerd): %w", ctr, err)
	}
	spec, _, err := entry.Rewrite(out, entry.New(hookPath, cfgPath))
	return spec, err
}

// hooksDoc is the hooks.d file of podman and CRI-O.
func hooksDoc(hookPath, cfgPath string, hostWide bool) map[string]any {
	h := entry.New(hookPath, cfgPath)
	if hostWide {
		// The host's file, read for rootless users too (entry.HostWideFlag).
		h.Args = append(h.Args, entry.HostWideFlag)
	}
	return map[string]any{
		"version": "1.0.0",
		"hook":    h,
		"when":    map[string]any{"always": true},
		"stages":  []string{"createRuntime"},
	}
}

// installedPath finds one of northstar's binaries as binpath does, else
// names the conventional install path: a snippet is printed even before
// the binaries are installed.
func installedPath(name string) string {
	if p, err := binpath.Find(name); err == nil {
		return p
	}
	return filepath.Join("/usr/local/bin", name)
}

// hookBinary is the hook a runtime's hook entry names for a config whose
// [agent] socket is agentSocket: northstar-agent-hook where the config
// runs the agent and it is installed (the agent does the hook's work, and
// it becomes northstar-hook for the starts the agent does not serve),
// else northstar-hook.
func hookBinary(agentSocket string) string {
	if agentSocket != "" {
		if p, err := binpath.Find(entry.AgentName); err == nil {
			return p
		}
	}
	return installedPath(entry.Name)
}

func runConfig(_ context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "config", "containerd|base-spec|hooks-d|runc|crio [--config PATH] [--config-version 2|3] [--rootless] [--host-wide]")
	cfgVersion := fs.Int("config-version", 0, "containerd config version for the CRI table: 2 (containerd 1.x) or 3 (2.x); default: that of the containerd on PATH")
	rootless := fs.Bool("rootless", false, "runc: the hooks for plain rootless runc (runc spec --rootless)")
	hostWide := fs.Bool("host-wide", false, "hooks-d: a file for the whole host (/usr/share/containers/oci/hooks.d, which rootless podman reads too): a rootless user without a config of their own is left alone")
	pos, err := parse(fs, env, args, 1)
	if err != nil {
		return helpOK(err)
	}
	var target string
	if len(pos) == 1 {
		target = pos[0]
	}
	if v := *cfgVersion; v != 0 && v != 2 && v != 3 {
		return fmt.Errorf("%w: --config-version %d: want 2 (containerd 1.x) or 3 (containerd 2.x)", ErrUsage, v)
	}
	path, err := filepath.Abs(config.Discover(*cfgPath))
	if err != nil {
		return err
	}
	// Snippets are printed whether or not the config exists or loads:
	// only its [agent] socket is read, if it is there.
	socket, _ := peek.AgentSocket(path)
	hookPath := hookBinary(socket)
	switch target {
	case "containerd":
		version := *cfgVersion
		if version == 0 {
			version = containerdConfigVersion()
		}
		shim := installedPath("containerd-shim-northstar-v2")
		fmt.Fprintf(env.Stdout, `# containerd: put %[1]s and northstar-hook in one directory
# on containerd's PATH (or name the shim with runtime_path). The shim adds the hook,
# then execs the host's containerd-shim-runc-v2 ([shim] delegate in the northstar
# config names another). No entry is needed for ctr:
#   ctr run --runtime io.containerd.northstar.v2 IMAGE ID
#   ctr run --runtime %[1]s IMAGE ID
# If the config is not at the default path, containerd's environment needs
#   NORTHSTAR_CONFIG=%[2]s       (systemd drop-in: Environment=NORTHSTAR_CONFIG=%[2]s)
#
# CRI: add to /etc/containerd/config.toml (config version = %[3]d; for the other
# version run 'northstarctl config containerd --config-version %[4]d'). No .options
# table: CRI sends options to a runtime type it does not know as runc in a
# generic form the runc shim (which the northstar shim execs) cannot read.
%[5]s
  runtime_type = "io.containerd.northstar.v2"
  runtime_path = %[1]q
%[6]s
# Kubernetes: a RuntimeClass whose handler is the runtime name above
#   apiVersion: node.k8s.io/v1
#   kind: RuntimeClass
#   metadata: {name: northstar}
#   handler: northstar
# and runtimeClassName: northstar in the pod spec.
`, shim, path, version, 5-version, criRuntimeTable[version], baseSpecNote[version])
	case "base-spec":
		spec, err := baseSpec("ctr", hookPath, path)
		if err != nil {
			return fmt.Errorf("base-spec: %w", err)
		}
		fmt.Fprintln(env.Stderr, "# containerd 2.x CRI: save stdout as "+BaseSpecPath+" (see 'northstarctl config containerd')")
		_, err = env.Stdout.Write(spec)
		return err
	case "hooks-d":
		doc := hooksDoc(hookPath, path, *hostWide)
		// Notes go to stderr so stdout can be redirected into the file.
		fmt.Fprintln(env.Stderr, "# podman / CRI-O: save stdout as /usr/share/containers/oci/hooks.d/northstar.json")
		fmt.Fprintln(env.Stderr, "# (rootless podman: ~/.config/containers/oci/hooks.d/); use \"prestart\" on runtimes without createRuntime.")
		return writeJSON(env.Stdout, doc)
	case "runc":
		if *rootless {
			// Plain rootless runc runs the hook inside the container too,
			// where the agent does not serve it.
			hookPath = installedPath(entry.Name)
		}
		h := entry.New(hookPath, path)
		fmt.Fprintln(env.Stderr, "# runc/crun: merge stdout into the bundle's config.json \"hooks\".")
		if !*rootless {
			fmt.Fprintln(env.Stderr, "# Plain rootless runc (runc spec --rootless): 'northstarctl config runc --rootless'.")
			return writeJSON(env.Stdout, map[string]any{"hooks": map[string]any{"createRuntime": []any{h}}})
		}
		// Plain rootless runc: only inside the container can the hook
		// mount; only outside can it register with the agent.
		hooks := map[string]any{"createContainer": []any{h}}
		cfg, err := config.Load(path)
		switch {
		case err != nil:
			fmt.Fprintf(env.Stderr, "# %v: printing the hooks without the API\n", err)
		case cfg.API.Enable:
			hooks["createRuntime"] = []any{h}
			fmt.Fprintln(env.Stderr, "# [api] enable: the createRuntime hook registers with the agent, the createContainer hook mounts.")
		}
		return writeJSON(env.Stdout, map[string]any{"hooks": hooks})
	case "crio":
		return printCRIO(env.Stdout, env.Stderr, path)
	case "":
		return fmt.Errorf("%w: config needs a target: containerd, base-spec, hooks-d, runc or crio", ErrUsage)
	default:
		return fmt.Errorf("%w: unknown config target %q: want containerd, base-spec, hooks-d, runc or crio", ErrUsage, target)
	}
	return nil
}
