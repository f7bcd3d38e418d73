// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/hook/entry"
)

// TestRootlessPodmanHostWideHook: a host-wide hooks.d file (the package's:
// `config hooks-d --host-wide`, the host's config, root's state) as
// rootless podman reads it. A user with no config of their own gets
// containers that start untouched; once they write
// ~/.config/northstar/config.toml (their own state), their containers get
// their secret, and fail closed again when it is broken. Root's podman
// with the same file gets the host's secret.
func TestRootlessPodmanHostWideHook(t *testing.T) {
	requires(t, "podman", "runc", "newuidmap", "newgidmap")
	a := unprivileged(t)
	host := newEnv(t, "", nil) // root's state: 0700, unreadable to a
	p := newTestPodman(t, a, host)
	r := mustRun(t, exec.Command(bins.ctl, "config", "hooks-d", "--host-wide", "--config", host.config))
	if !strings.Contains(r.stdout, `"`+entry.HostWideFlag+`"`) {
		t.Fatalf("config hooks-d --host-wide:\n%s", r.stdout)
	}
	if err := os.WriteFile(filepath.Join(p.hooks, "northstar.json"), []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}

	if r := p.run(t, "test -e /run/northstar/secret && echo SECRET || echo NONE"); r.err != nil || strings.TrimSpace(r.stdout) != "NONE" {
		t.Fatalf("a rootless user without a config of their own:\n%s\nwant a container that starts, without a secret", r)
	}

	// The user's own config: their own state, their own secret.
	own := newEnv(t, "", a)
	userConfig := filepath.Join(a.home, entry.UserConfig)
	if _, err := os.Lstat(userConfig); err == nil {
		t.Fatalf("%s exists: this test writes it", userConfig)
	}
	if err := os.MkdirAll(filepath.Dir(userConfig), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(userConfig) })
	b, err := os.ReadFile(own.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(userConfig, b, 0o644); err != nil {
		t.Fatal(err)
	}
	a.chownR(t, filepath.Dir(userConfig))
	if r := p.run(t, "cat /run/northstar/secret"); r.err != nil || r.stdout != own.secretHex(t) {
		t.Fatalf("a rootless user with ~/%s:\n%s\nwant their own secret", entry.UserConfig, r)
	}
	// Asked for, so it fails closed: a broken config stops the container.
	if err := os.WriteFile(userConfig, []byte("sealer = \"bogus\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := p.run(t, "echo STARTED"); r.err == nil || strings.Contains(r.stdout, "STARTED") {
		t.Errorf("a rootless user's broken config: the container started:\n%s", r)
	}

	// Root's podman, the same file: the host's secret.
	root := newTestPodman(t, nil, host)
	if err := os.WriteFile(filepath.Join(root.hooks, "northstar.json"), []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := root.run(t, "cat /run/northstar/secret"); r.err != nil || r.stdout != host.secretHex(t) {
		t.Errorf("rootful podman with the host-wide file:\n%s\nwant the host's secret", r)
	}
}
