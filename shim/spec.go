// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"errors"
	"path/filepath"

	"github.com/northstar-oci/northstar/config"
)

// configPath is the config the shim and its hook use: NORTHSTAR_CONFIG from
// containerd's environment, else the rootful or rootless default. It must be
// absolute: the hook runs with the bundle as its working directory.
func configPath() (string, error) {
	p := config.Discover("")
	if !filepath.IsAbs(p) {
		return "", errors.New(config.EnvConfig + "=" + p + " is not an absolute path")
	}
	return filepath.Clean(p), nil
}
