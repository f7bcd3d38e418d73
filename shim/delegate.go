package shim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/config"
)

// findDelegate resolves the shim the wrapper hands over to ([shim]
// delegate): an absolute path as it is; a name the way containerd finds
// shims, next to the containerd binary (runtimePid's executable), else on
// PATH. The wrapper must never exec itself.
func findDelegate(cfg *config.Config, runtimePid int) (string, error) {
	name := config.DefaultShimDelegate
	if cfg != nil {
		name = cfg.Shim.Delegate
	}
	path, err := lookDelegate(name, runtimePid)
	if err != nil {
		return "", err
	}
	if self, err := os.Executable(); err == nil && sameFile(self, path) {
		return "", fmt.Errorf("[shim] delegate %s is this wrapper itself; name the runc shim (containerd-shim-runc-v2)", path)
	}
	return path, nil
}

func lookDelegate(name string, runtimePid int) (string, error) {
	if filepath.IsAbs(name) {
		if !isExecutable(name) {
			return "", fmt.Errorf("[shim] delegate %s is not an executable file", name)
		}
		return name, nil
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", runtimePid)); err == nil {
		if p := filepath.Join(filepath.Dir(exe), name); isExecutable(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("[shim] delegate %s is neither next to containerd nor on PATH; install it (Debian: containerd) or set [shim] delegate", name)
	}
	return filepath.Abs(p)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
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
