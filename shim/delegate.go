// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/internal/binpath"
)

// findDelegate resolves the shim the wrapper hands over to ([shim]
// delegate): an absolute path as it is; a name the way containerd finds
// shims, next to the containerd binary (runtimeExe), else on PATH. The
// wrapper must never exec itself.
func findDelegate(cfg *config.Config, runtimeExe string) (string, error) {
	name := config.DefaultShimDelegate
	if cfg != nil {
		name = cfg.Shim.Delegate
	}
	path, fi, err := lookDelegate(name, runtimeExe)
	if err != nil {
		return "", err
	}
	if self, err := os.Stat("/proc/self/exe"); err == nil && os.SameFile(self, fi) {
		return "", fmt.Errorf("[shim] delegate %s is this wrapper itself; name the runc shim (containerd-shim-runc-v2)", path)
	}
	return path, nil
}

// lookDelegate returns the delegate's path and what stat says of it.
func lookDelegate(name, runtimeExe string) (string, os.FileInfo, error) {
	if filepath.IsAbs(name) {
		fi, ok := binpath.Executable(name)
		if !ok {
			return "", nil, fmt.Errorf("[shim] delegate %s is not an executable file", name)
		}
		return name, fi, nil
	}
	if runtimeExe != "" {
		p := filepath.Join(filepath.Dir(runtimeExe), name)
		if fi, ok := binpath.Executable(p); ok {
			return p, fi, nil
		}
	}
	missing := fmt.Errorf("[shim] delegate %s is neither next to containerd nor on PATH; install it (Debian: containerd) or set [shim] delegate", name)
	p, err := exec.LookPath(name)
	if err != nil {
		return "", nil, missing
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", nil, err
	}
	fi, ok := binpath.Executable(p)
	if !ok {
		return "", nil, missing
	}
	return p, fi, nil
}

// execDelegate replaces this process with the delegate: same arguments
// (argv[0] is the delegate's path), environment, stdin and working
// directory, so the delegate answers containerd exactly as if containerd
// had run it. It returns only if exec fails.
func execDelegate(path string, args []string) error {
	argv := append([]string{path}, args...)
	if err := unix.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}
