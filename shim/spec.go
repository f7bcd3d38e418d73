// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"errors"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
)

// injectIntoBundle adds the northstar hook (and apiEnv) to
// bundle/config.json: entry.InjectIntoBundle, shared with
// northstar-runtime.
func injectIntoBundle(bundle string, want specs.Hook, apiEnv ...string) (changed bool, err error) {
	return entry.InjectIntoBundle(bundle, want, apiEnv...)
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
