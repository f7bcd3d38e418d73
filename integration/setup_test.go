// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dirState is every file under dir with its content: what "changes
// nothing" compares.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		files[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestSetupContainerd: `northstarctl setup containerd` on real configs of
// the containerd that reads them. --dry-run prints the change and changes
// nothing (no file, no state); a second run changes nothing; a config
// that does not parse is refused, naming the file and line. On Debian's
// containerd 1.6 (no safe drop-ins) it edits config.toml in a marked
// block, and a pod of the runtime handler it registered gets the secret.
func TestSetupContainerd(t *testing.T) {
	e, sock, _ := nriEnv(t)
	c := newCRIContainerd(t, e, "containerd 1.6 (Debian, setup)", "")
	c.writeConfig(t, 2, "")
	before := dirState(t, c.dir)
	stateBefore := dirState(t, e.dir)

	r := setupContainerd(t, e, c, "--dry-run")
	if r.err != nil || !strings.Contains(r.stdout, "+ [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.northstar]") || !strings.Contains(r.stdout, "nothing was changed") {
		t.Fatalf("dry run:\n%s", r)
	}
	if !sameFiles(before, dirState(t, c.dir)) || !sameFiles(stateBefore, dirState(t, e.dir)) {
		t.Fatal("--dry-run changed files")
	}

	// Setup ends with doctor, which fails with [api] enable and no agent.
	startAgent(t, e, sock)
	if r := setupContainerd(t, e, c); r.err != nil || !strings.Contains(r.stdout, "wrote "+c.configPath()) || !strings.Contains(r.stdout, "backed up ") {
		t.Fatalf("setup:\n%s", r)
	}
	wired := dirState(t, c.dir)
	if r := setupContainerd(t, e, c); r.err != nil || !strings.Contains(r.stdout, "wired already, nothing changed") {
		t.Fatalf("second setup:\n%s", r)
	}
	if !sameFiles(wired, dirState(t, c.dir)) {
		t.Error("the second run changed files (or made another backup)")
	}
	if dump := c.command("containerd", "--config", c.configPath(), "config", "dump"); true {
		if out := mustRun(t, dump).stdout; !strings.Contains(out, `runtime_type = "io.containerd.northstar.v2"`) {
			t.Fatalf("containerd does not read the northstar runtime from the edited config:\n%s", out)
		}
	}

	// The pod runtime it registered.
	c.start(t)
	c.importImage(t)
	p := c.runPod(t, "web")
	id := c.runContainer(t, p, "app")
	if got := secretOf(t, c.pid(t, "inspect", id)); got == "" || got != e.secretHex(t) {
		t.Errorf("a pod of the runtime handler setup registered read %q, want %s", got, e.secretHex(t))
	}

	bad := filepath.Join(c.dir, "broken.toml")
	if err := os.WriteFile(bad, []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := c.command(bins.ctl, "setup", "containerd", "--config", e.config, "--runtime-config", bad)
	r = run(t, cmd)
	if r.err == nil || !strings.Contains(r.stderr, bad+": line 2:") || !strings.Contains(r.stderr, "fix the file or pass --runtime-config") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("a broken config:\n%s\nwant one line naming %s and its line", r, bad)
	}
	if got, _ := os.ReadFile(bad); string(got) != "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n" {
		t.Error("the broken config was changed")
	}
}
