// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/setup"
)

// podmanHooksDefault is how `podman --help` states the hooks directories
// it reads (containers.conf's hooks_dir, else its built-in default):
//
//	--hooks-dir strings   Set the OCI hooks directory path (may be set multiple times) (default [/usr/share/containers/oci/hooks.d])
var podmanHooksDefault = regexp.MustCompile(`--hooks-dir strings .*\(default \[([^]]*)\]\)`)

// podmanHooksDirs asks podman which hooks.d directories it reads. Debian
// 12's podman 4.3 reads only /usr/share/containers/oci/hooks.d unless
// containers.conf says otherwise; the /etc directory of oci-hooks(5) is
// not among them.
func podmanHooksDirs(podman string) ([]string, error) {
	out, err := exec.Command(podman, "--help").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --help: %w", podman, err)
	}
	m := podmanHooksDefault.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("%s --help names no hooks directory; pass --hooks-dir", podman)
	}
	return strings.Fields(string(m[1])), nil
}

// planPodman plans the hooks.d file in a directory podman reads: nothing
// when one of them holds it already (the package's file); else the last
// of them (a later directory's file of the same name wins). An explicit
// --hooks-dir that podman does not read is refused: containers would
// start without the secret while setup said it was done. Verify asks
// podman again once the file is written.
func planPodman(cfg *config.Config, f *setupFlags) (*setup.Plan, error) {
	data, err := json.MarshalIndent(hooksDoc(hookBinary(cfg.Agent.Socket), cfg.Path, true), "", "  ")
	if err != nil {
		return nil, err
	}
	want := append(data, '\n')
	dirs, err := podmanHooksDirs(f.podman)
	if err != nil && f.hooksD == "" {
		return nil, fmt.Errorf("where does podman read hooks? %w", err)
	}
	dir := f.hooksD
	switch {
	case dir == "":
		for _, d := range dirs {
			if old, _ := os.ReadFile(filepath.Join(d, hooksFile)); bytes.Equal(old, want) {
				dir = d
			}
		}
		if dir == "" {
			dir = dirs[len(dirs)-1]
		}
	case dirs != nil && !slices.Contains(dirs, filepath.Clean(dir)):
		return nil, fmt.Errorf("podman reads hooks from %s, not %s: pass --hooks-dir %s, or add %s to hooks_dir in containers.conf", strings.Join(dirs, ", "), dir, dirs[len(dirs)-1], dir)
	}
	path := filepath.Join(dir, hooksFile)
	plan := &setup.Plan{Notes: []string{"podman runs the hook for every container it starts from now on (" + path + "); rootless users' containers get the secret once they have a config of their own (~/" + entry.UserConfig + "), and start untouched until then"}}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if !bytes.Equal(old, want) {
		plan.Changes = append(plan.Changes, setup.Change{Path: path, Old: old, New: want, Mode: 0o644, Why: "the hook for every podman container"})
	}
	if f.hooksD == "" {
		plan.Verify = func() error {
			dirs, err := podmanHooksDirs(f.podman)
			if err != nil {
				return err
			}
			for _, d := range dirs {
				if got, _ := os.ReadFile(filepath.Join(d, hooksFile)); bytes.Equal(got, want) {
					return nil
				}
			}
			return fmt.Errorf("podman reads hooks from %s, and none holds %s", strings.Join(dirs, ", "), path)
		}
	}
	return plan, nil
}
