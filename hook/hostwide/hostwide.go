// SPDX-License-Identifier: Apache-2.0

// Package hostwide picks the config of a hook run from a hook file
// installed for every user of the host (entry.HostWideFlag: the Debian
// package's hooks.d file, which podman reads for rootless users too).
package hostwide

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/idmap"
)

// Config picks the config for a hook run from a host-wide hook
// file (entry.HostWideFlag). Root on the host (rootful podman, CRI-O) gets the host's config,
// as without the flag: every failure stops the container. A rootless
// user's podman runs the hook too, as that user; then:
//
//   - the user's own config (UserConfig in their home) if they wrote one:
//     they asked for northstar, so it fails closed as for root;
//   - else the host's config if its state directory is theirs to read
//     (the host gave them northstar);
//   - else nothing at all (skip): the user never asked for northstar and
//     could not use the host's state anyway (0700, root's), so their
//     containers start as they would without the package, with no secret.
//
// Failing closed there would break every rootless container on the host
// for a file its users never asked for. What skipping gives up: a rootless
// user who wants the secret and has no config of their own gets none,
// silently; their containers are no worse off than before the package.
// No container can steer this: it depends only on the uid the runtime
// runs the hook as and on files of that user and of root.
func Config(hostPath string) (path string, skip bool, err error) {
	uid, err := idmap.HostUID()
	if err != nil {
		return "", false, fmt.Errorf("host-wide hook: %w", err)
	}
	if uid == 0 {
		return hostPath, false, nil
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && u.HomeDir != "" {
		own := filepath.Join(u.HomeDir, entry.UserConfig)
		if _, err := os.Stat(own); err == nil {
			return own, false, nil
		}
	}
	cfg, err := config.Load(hostPath)
	if err != nil {
		return "", false, fmt.Errorf("load config: %w", err)
	}
	d, err := os.Open(cfg.StateDir)
	if errors.Is(err, fs.ErrPermission) {
		return "", true, nil
	}
	if err == nil {
		d.Close()
	}
	return hostPath, false, nil
}
