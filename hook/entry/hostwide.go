// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/northstar-oci/northstar/config"
)

// HostWideConfig picks the config for a hook run from a host-wide hook
// file (HostWideFlag). Root on the host (rootful podman, CRI-O) gets the host's config,
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
func HostWideConfig(hostPath string) (path string, skip bool, err error) {
	uid, err := hostUID()
	if err != nil {
		return "", false, fmt.Errorf("host-wide hook: %w", err)
	}
	if uid == 0 {
		return hostPath, false, nil
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && u.HomeDir != "" {
		own := filepath.Join(u.HomeDir, UserConfig)
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

// hostUID is the uid on the host of the user the hook runs as: its euid
// through the user namespace it is in (rootless podman runs hooks as uid 0
// of the user's namespace).
func hostUID() (uint32, error) {
	f, err := os.Open("/proc/self/uid_map")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return mapID(bufio.NewScanner(f), uint32(os.Geteuid()))
}

// mapID maps id through the lines of a uid_map ("inside outside count").
func mapID(s *bufio.Scanner, id uint32) (uint32, error) {
	for s.Scan() {
		var in, out, n uint64
		f := strings.Fields(s.Text())
		if len(f) != 3 {
			continue
		}
		var err1, err2, err3 error
		in, err1 = strconv.ParseUint(f[0], 10, 32)
		out, err2 = strconv.ParseUint(f[1], 10, 32)
		n, err3 = strconv.ParseUint(f[2], 10, 33)
		if err := errors.Join(err1, err2, err3); err != nil {
			return 0, fmt.Errorf("uid_map: %w", err)
		}
		if uint64(id) >= in && uint64(id)-in < n {
			return uint32(out + uint64(id) - in), nil
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("uid %d is not mapped in this user namespace", id)
}
