package ctl

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/binpath"
)

// installedPath finds one of northstar's binaries as binpath does, else
// names the conventional install path: a snippet is printed even before
// the binaries are installed.
func installedPath(name string) string {
	if p, err := binpath.Find(name); err == nil {
		return p
	}
	return filepath.Join("/usr/local/bin", name)
}

func runConfig(_ context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "config", "containerd|hooks-d|runc [--config PATH]")
	var target string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		target, args = args[0], args[1:]
	}
	if err := parse(fs, env, args); err != nil {
		return helpOK(err)
	}
	path, err := filepath.Abs(config.Discover(*cfgPath))
	if err != nil {
		return err
	}
	hookPath := installedPath(entry.Name)
	switch target {
	case "containerd":
		shim := installedPath("containerd-shim-northstar-v2")
		fmt.Fprintf(env.Stdout, `# containerd: put %[1]s and northstar-hook in one directory
# on containerd's PATH (or name the shim with runtime_path). The shim adds the hook,
# then execs the host's containerd-shim-runc-v2 ([shim] delegate in the northstar
# config names another). No entry is needed for ctr:
#   ctr run --runtime io.containerd.northstar.v2 IMAGE ID
#   ctr run --runtime %[1]s IMAGE ID
# If the config is not at the default path, containerd's environment needs
#   NORTHSTAR_CONFIG=%[2]s       (systemd drop-in: Environment=NORTHSTAR_CONFIG=%[2]s)

# CRI, containerd 1.6/1.7 (config version = 2), /etc/containerd/config.toml:
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.northstar]
  runtime_type = "io.containerd.northstar.v2"
  runtime_path = %[3]q
  # No .options table: containerd sends options to a runtime type it does not
  # know as runc in a generic form the runc shim (which the northstar shim
  # execs) cannot read.

# CRI, containerd 2.x (config version = 3):
# [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.northstar]
#   runtime_type = 'io.containerd.northstar.v2'
#   runtime_path = '%[1]s'

# Kubernetes: a RuntimeClass whose handler is the runtime name above
#   apiVersion: node.k8s.io/v1
#   kind: RuntimeClass
#   metadata: {name: northstar}
#   handler: northstar
# and runtimeClassName: northstar in the pod spec.
`, shim, path, shim)
	case "hooks-d":
		doc := map[string]any{
			"version": "1.0.0",
			"hook":    entry.New(hookPath, path),
			"when":    map[string]any{"always": true},
			"stages":  []string{"createRuntime"},
		}
		// Notes go to stderr so stdout can be redirected into the file.
		fmt.Fprintln(env.Stderr, "# podman / CRI-O: save stdout as /usr/share/containers/oci/hooks.d/northstar.json")
		fmt.Fprintln(env.Stderr, "# (rootless podman: ~/.config/containers/oci/hooks.d/); use \"prestart\" on runtimes without createRuntime.")
		return writeJSON(env.Stdout, doc)
	case "runc":
		h := entry.New(hookPath, path)
		fmt.Fprintln(env.Stderr, "# runc/crun: merge stdout into the bundle's config.json \"hooks\".")
		fmt.Fprintln(env.Stderr, "# Plain rootless runc (runc spec --rootless): use \"createContainer\" instead of \"createRuntime\".")
		return writeJSON(env.Stdout, map[string]any{"hooks": map[string]any{"createRuntime": []any{h}}})
	case "":
		return fmt.Errorf("%w: config needs a target: containerd, hooks-d or runc", ErrUsage)
	default:
		return fmt.Errorf("%w: unknown config target %q: want containerd, hooks-d or runc", ErrUsage, target)
	}
	return nil
}
