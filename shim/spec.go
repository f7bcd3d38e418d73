package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/capped"
)

// injectIntoBundle adds the northstar hook (and, for a container that gets
// the agent's API, the variables apiEnv) to bundle/config.json, replacing
// the file atomically (temp file in the bundle, rename) so runc never reads
// half a spec. It keeps the file's mode.
//
// No fsync (atomicfile.Replace, not Write): runc reads the file from the
// page cache right after, rename alone keeps readers from seeing half a
// spec, and after a host crash nothing reuses the bundle (containerd
// creates it afresh and the hook is injected again). A torn file could only
// make runc refuse to parse it: fail closed. The fsyncs cost 0.4-0.8 ms per
// start; docs/performance.md has the measurement.
func injectIntoBundle(bundle string, want specs.Hook, apiEnv ...string) (changed bool, err error) {
	path := filepath.Join(bundle, "config.json")
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open bundle config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("open bundle config: %w", err)
	}
	data, err := capped.ReadAll(f, entry.MaxBundleConfigSize, "bundle config.json")
	if err != nil {
		return false, err
	}
	out, changed, err := entry.Rewrite(data, want, apiEnv...)
	if err != nil || !changed {
		return false, err
	}
	if err := atomicfile.Replace(path, out, fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("rewrite bundle config: %w", err)
	}
	return true, nil
}

// apiEnv is what the containers that get the agent's API find in their
// environment: with a SPIFFE trust domain, where the Workload API is
// (SPIFFE_ENDPOINT_SOCKET), so that go-spiffe, SPIRE's and Envoy's clients
// and spiffe-helper find it with no flag.
func apiEnv(cfg *config.Config) []string { return entry.APIEnv(cfg.SPIFFE.TrustDomain) }

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
