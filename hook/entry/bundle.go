// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/capped"
)

// InjectIntoBundle adds the northstar hook want (and, for a container
// that gets the agent's API, the variables apiEnv) to bundle/config.json
// with Rewrite, replacing the file atomically (temp file in the bundle,
// rename) so the runtime never reads half a spec. It keeps the file's mode
// and reads at most MaxBundleConfigSize bytes. The shim runs it at
// `start`, northstar-runtime at `create` and `run`.
//
// No fsync (atomicfile.Replace, not Write): runc reads the file from the
// page cache right after, rename alone keeps readers from seeing half a
// spec, and after a host crash nothing reuses the bundle (the engine
// creates it afresh and the hook is injected again). A torn file could only
// make runc refuse to parse it: fail closed. The fsyncs cost 0.4-0.8 ms per
// start; docs/performance.md has the measurement.
func InjectIntoBundle(bundle string, want specs.Hook, apiEnv ...string) (changed bool, err error) {
	data, perm, err := ReadBundleConfig(bundle)
	if err != nil {
		return false, err
	}
	return InjectInto(bundle, data, perm, want, apiEnv...)
}

// InjectInto is InjectIntoBundle for a config.json already read (data, its
// permissions perm), by a caller that looked at it first.
func InjectInto(bundle string, data []byte, perm os.FileMode, want specs.Hook, apiEnv ...string) (changed bool, err error) {
	out, changed, err := Rewrite(data, want, apiEnv...)
	if err != nil || !changed {
		return false, err
	}
	return true, WriteBundleConfig(bundle, out, perm)
}

// ReadBundleConfig reads bundle/config.json (a regular file, at most
// MaxBundleConfigSize bytes) and returns it with its permissions.
func ReadBundleConfig(bundle string) ([]byte, os.FileMode, error) {
	path := filepath.Join(bundle, "config.json")
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open bundle config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("open bundle config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("bundle config %s is not a regular file", path)
	}
	data, err := capped.ReadAll(f, MaxBundleConfigSize, "bundle config.json")
	return data, fi.Mode().Perm(), err
}

// WriteBundleConfig replaces bundle/config.json with data, atomically and
// without fsync (see InjectIntoBundle).
func WriteBundleConfig(bundle string, data []byte, perm os.FileMode) error {
	if err := atomicfile.Replace(filepath.Join(bundle, "config.json"), data, perm); err != nil {
		return fmt.Errorf("rewrite bundle config: %w", err)
	}
	return nil
}
