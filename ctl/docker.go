// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/setup"
)

// defaultDaemonJSON is where dockerd reads its config by default.
const defaultDaemonJSON = "/etc/docker/daemon.json"

// runtimeBinary is the runc-compatible wrapper Docker, CRI-O and `podman
// --runtime` run.
const runtimeBinary = "northstar-runtime"

// planDocker plans dockerd's wiring: the runtime northstar in
// daemon.json (f.daemonJSON), the default with f.dockerDefault.
func planDocker(cfg *config.Config, f *setupFlags) (*setup.Plan, error) {
	path, err := filepath.Abs(f.daemonJSON)
	if err != nil {
		return nil, err
	}
	d := &setup.Docker{Config: path, Runtime: installedPath(runtimeBinary), Default: f.dockerDefault}
	p, err := d.Plan()
	if err != nil {
		return nil, err
	}
	if cfg.Path != config.DefaultPath {
		p.Notes = append(p.Notes, fmt.Sprintf("dockerd's environment needs %s=%s (systemd: a drop-in with Environment=%s=%s): the runtime reads it from there", config.EnvConfig, cfg.Path, config.EnvConfig, cfg.Path))
	}
	return p, nil
}

// printCRIO prints the CRI-O drop-in that runs every container through
// northstar-runtime. Untested here: CRI-O is neither in Debian 12 nor
// buildable from the Go module proxy (docs/runtimes.md).
func printCRIO(w, notes io.Writer, cfgPath string) error {
	fmt.Fprintln(notes, "# CRI-O: save stdout as /etc/crio/crio.conf.d/99-northstar.conf, then restart crio.")
	fmt.Fprintln(notes, "# Untested by make test: CRI-O is not packaged in Debian 12. (CRI-O also reads podman's hooks.d: 'northstarctl config hooks-d'.)")
	env := ""
	if cfgPath != config.DefaultPath {
		env = fmt.Sprintf("\n# The runtime finds the northstar config through conmon's environment.\nmonitor_env = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"%s=%s\"]", config.EnvConfig, cfgPath)
	}
	_, err := fmt.Fprintf(w, `# northstar-runtime adds the northstar hook to every container, then execs runc
# ([runtime] delegate in the northstar config names another, e.g. crun).
[crio.runtime]
default_runtime = "northstar"

[crio.runtime.runtimes.northstar]
runtime_path = %q
runtime_type = "oci"
runtime_root = "/run/runc"
# The annotations the hook reads, passed from the pod spec to the container.
allowed_annotations = ["io.northstar.secret.disable", "io.northstar.api.disable", "io.northstar.identity", "io.northstar.secret.uid", "io.northstar.secret.gid", "io.northstar.secret.mode"]%s
`, installedPath(runtimeBinary), env)
	return err
}
