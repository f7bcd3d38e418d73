// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const northstarRuntime = "io.containerd.northstar.v2"

// containerd2Bin holds containerd v2.4.2 (containerd, ctr,
// containerd-shim-runc-v2) as scripts/install-tools.sh builds it.
var containerd2Bin = filepath.Join(toolsDir(), "containerd-v2.4.2")

// toolsDir is where scripts/install-tools.sh puts what Debian lacks.
func toolsDir() string {
	if d := os.Getenv("TOOLS_DIR"); d != "" {
		return d
	}
	return "/opt/northstar-tools"
}

// forEachContainerd runs fn as a subtest under each containerd the shim is
// kept working with: Debian's 1.6 and a 2.x build. flavor is the
// environment that selects it for startContainerd.
func forEachContainerd(t *testing.T, fn func(t *testing.T, a *account, flavor []string)) {
	a := requiresContainerd(t)
	t.Run("containerd 1.6 (Debian)", func(t *testing.T) { fn(t, a, nil) })
	t.Run("containerd 2.4.2", func(t *testing.T) {
		requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
		fn(t, a, []string{"CONTAINERD_BIN=" + containerd2Bin})
	})
}

// TestContainerdShimLifecycle: containers of rootless containerd that
// select the northstar runtime get the lifecycle secret with no hook
// configured anywhere; a containerd restart starts a new lifecycle, and a
// container of the old one keeps its old secret.
func TestContainerdShimLifecycle(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, a *account, flavor []string) {
		e := newEnv(t, "", a)
		c := startContainerd(t, a, append(flavor, "NORTHSTAR_CONFIG="+e.config)...)
		shim, _ := shimBinary()

		// Lifecycle 1: two containers read the same secret, the store's.
		s1 := c.readSecret(t, northstarRuntime)
		if s2 := c.readSecret(t, northstarRuntime); s2 != s1 {
			t.Fatalf("two containers of one lifecycle read different secrets: %s, %s", s1, s2)
		}
		if want := e.secretHex(t); s1 != want {
			t.Fatalf("containers read %s, the store holds %s", s1, want)
		}
		rec1 := e.record(t)
		if pid := lifecyclePid(rec1.LifecycleID); pid != c.pid(t) {
			t.Errorf("lifecycle id %q, want one naming containerd pid %d", rec1.LifecycleID, c.pid(t))
		}

		// A long-running container of lifecycle 1.
		long := c.newID("long")
		mustCtr(t, c, c.runArgs(northstarRuntime, long, true, "sleep 600")...)
		if got := strings.TrimSpace(mustCtr(t, c, "task", "exec", "--exec-id", "read1", long, "/bin/cat", "/run/northstar/secret").stdout); got != s1 {
			t.Fatalf("long-running container read %q, want %s", got, s1)
		}

		// The shim added exactly the hook it owns to the bundle containerd wrote.
		spec := c.bundleSpec(t, long)
		if spec.Hooks == nil || len(spec.Hooks.CreateRuntime) != 1 {
			t.Fatalf("bundle hooks %+v, want the northstar createRuntime hook only", spec.Hooks)
		}
		h := spec.Hooks.CreateRuntime[0]
		if h.Path != filepath.Join(filepath.Dir(shim), "northstar-hook") ||
			!reflect.DeepEqual(h.Args, []string{"northstar-hook", "--config", e.config}) ||
			!reflect.DeepEqual(h.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}) ||
			h.Timeout == nil || *h.Timeout != 30 {
			t.Errorf("injected hook %+v (timeout %v)", h, h.Timeout)
		}

		// containerd restarts: the next container starts lifecycle 2.
		_, newPid := c.restart(t)
		s3 := c.readSecret(t, northstarRuntime)
		if s3 == s1 {
			t.Fatal("a container after the containerd restart read the old lifecycle's secret")
		}
		rec2 := e.record(t)
		if rec2.Generation != rec1.Generation+1 || lifecyclePid(rec2.LifecycleID) != newPid {
			t.Errorf("after restart: generation %d lifecycle %q, want generation %d naming containerd pid %d",
				rec2.Generation, rec2.LifecycleID, rec1.Generation+1, newPid)
		}
		// The shim can also be named by its path.
		if s4 := c.readSecret(t, shim); s4 != s3 {
			t.Errorf("--runtime %s read %s, want %s", shim, s4, s3)
		}

		// The container of lifecycle 1 still holds its own, old secret.
		if got := strings.TrimSpace(mustCtr(t, c, "task", "exec", "--exec-id", "read2", long, "/bin/cat", "/run/northstar/secret").stdout); got != s1 {
			t.Errorf("long-running container now reads %q, want its lifecycle-1 secret %s", got, s1)
		}
		if rec := e.record(t); rec.Generation != rec2.Generation {
			t.Errorf("generation %d after more containers, want %d (one rotation per restart)", rec.Generation, rec2.Generation)
		}

		// A manual rotation starts a new generation, not a new lifecycle:
		// the next container gets its secret and nothing rotates again.
		rotate := exec.Command(bins.ctl, "rotate", "--config", e.config)
		a.apply(rotate)
		mustRun(t, rotate)
		if s5 := c.readSecret(t, northstarRuntime); s5 == s3 || s5 != e.secretHex(t) {
			t.Errorf("after northstarctl rotate a container read the old secret or not the store's")
		}
		if rec := e.record(t); rec.Generation != rec2.Generation+1 || rec.LifecycleID != rec2.LifecycleID {
			t.Errorf("after a manual rotate and a start: generation %d lifecycle %q, want generation %d keeping lifecycle %q",
				rec.Generation, rec.LifecycleID, rec2.Generation+1, rec2.LifecycleID)
		}
	})
}

// TestContainerdShimConcurrentStartsRotateOnce: 16 containers started at
// once right after a containerd restart rotate the secret exactly once and
// all read the new secret.
func TestContainerdShimConcurrentStartsRotateOnce(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, a *account, flavor []string) {
		e := newEnv(t, "", a)
		c := startContainerd(t, a, append(flavor, "NORTHSTAR_CONFIG="+e.config)...)
		old := c.readSecret(t, northstarRuntime)
		gen := e.record(t).Generation

		_, newPid := c.restart(t)
		const n = 16
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			args := c.runArgs(northstarRuntime, fmt.Sprintf("burst-%d", i), false, "cat /run/northstar/secret")
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = c.ctr(t, args...)
			}()
		}
		wg.Wait()

		seen := map[string]int{}
		for _, r := range results {
			if r.err != nil || !isSecretHex(r.stdout) {
				t.Errorf("container failed or read no secret:\n%s", r)
				continue
			}
			seen[r.stdout]++
		}
		if len(seen) != 1 {
			t.Fatalf("%d containers of one lifecycle read %d different secrets", n, len(seen))
		}
		for s := range seen {
			if s == old {
				t.Error("the containers read the previous lifecycle's secret")
			}
			if want := e.secretHex(t); s != want {
				t.Errorf("containers read %s, the store holds %s", s, want)
			}
		}
		if got := c.rotationsLogged(t); got != 1 {
			t.Errorf("containerd's log shows %d rotations by shims, want 1 (the first containerd adopted init's secret; one rotation for the restart)", got)
		}
		rec := e.record(t)
		if rec.Generation != gen+1 || lifecyclePid(rec.LifecycleID) != newPid {
			t.Errorf("generation %d (lifecycle %q) after %d concurrent starts, want exactly one rotation to %d for containerd pid %d",
				rec.Generation, rec.LifecycleID, n, gen+1, newPid)
		}
	})
}

// TestContainerdShimFailsClosed: when the secret cannot be rotated or
// materialized the container does not start, and ctr says why.
func TestContainerdShimFailsClosed(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, a *account, flavor []string) {
		e := newEnv(t, "", a)
		c := startContainerd(t, a, append(flavor, "NORTHSTAR_CONFIG="+e.config)...)
		c.readSecret(t, northstarRuntime) // the lifecycle is now current

		// refused checks that a container was refused with want in ctr's output.
		refused := func(t *testing.T, want string) {
			t.Helper()
			id := c.newID("refused")
			r := c.ctr(t, c.runArgs(northstarRuntime, id, false, "echo STARTED")...)
			if r.err == nil || strings.Contains(r.stdout, "STARTED") {
				t.Fatalf("container started without its secret:\n%s", r)
			}
			if !strings.Contains(r.stderr, want) {
				t.Errorf("ctr's error does not contain %q:\n%s", want, r)
			}
			t.Logf("refused: %s", strings.TrimSpace(r.stderr))
			if tl := mustCtr(t, c, "task", "ls"); strings.Contains(tl.stdout, id) {
				t.Errorf("task %s exists:\n%s", id, tl.stdout)
			}
		}

		t.Run("hook cannot unseal", func(t *testing.T) {
			key := filepath.Join(e.cfg.StateDir, "host.key")
			good, err := os.ReadFile(key)
			if err != nil {
				t.Fatal(err)
			}
			replaceFile(t, key, []byte(strings.Repeat("k", len(good))))
			t.Cleanup(func() { replaceFile(t, key, good) })
			refused(t, "northstar-hook: unseal:")
		})

		t.Run("rotation fails at shim start", func(t *testing.T) {
			c.restart(t)
			// A state dir the runtime user cannot write. chmod alone would not
			// do: root of rootlesskit's user namespace has CAP_DAC_OVERRIDE
			// over the files of the user it maps; root owns this one.
			if err := os.Chown(e.cfg.StateDir, 0, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(e.cfg.StateDir, 0o755); err != nil {
				t.Fatal(err)
			}
			refused(t, "northstar shim: rotate lifecycle secret:")
			if err := os.Chown(e.cfg.StateDir, int(a.uid), int(a.gid)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(e.cfg.StateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			// Fixed: the next container rotates and runs.
			gen := e.record(t).Generation
			c.readSecret(t, northstarRuntime)
			if g := e.record(t).Generation; g != gen+1 {
				t.Errorf("generation %d after the fix, want %d", g, gen+1)
			}
		})

		t.Run("no config", func(t *testing.T) {
			missing := filepath.Join(e.dir, "missing.toml")
			c.restart(t, "NORTHSTAR_CONFIG="+missing)
			t.Cleanup(func() { c.restart(t, "NORTHSTAR_CONFIG="+e.config) })
			refused(t, "northstar shim: config "+missing+" does not exist")
		})
	})
}

// TestContainerdShimFindsRootlessDefaultConfig: without NORTHSTAR_CONFIG a
// rootless containerd's shim uses $XDG_CONFIG_HOME/northstar/config.toml,
// and passes that path to the hook.
func TestContainerdShimFindsRootlessDefaultConfig(t *testing.T) {
	a := requiresContainerd(t)
	e := newEnv(t, "", a)
	xdg := filepath.Join(e.dir, "xdg")
	if err := os.MkdirAll(filepath.Join(xdg, "northstar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(e.config, filepath.Join(xdg, "northstar", "config.toml")); err != nil {
		t.Fatal(err)
	}
	e.config = filepath.Join(xdg, "northstar", "config.toml")
	a.chownR(t, xdg)
	c := startContainerd(t, a, "XDG_CONFIG_HOME="+xdg)

	long := c.newID("long")
	mustCtr(t, c, c.runArgs(northstarRuntime, long, true, "sleep 600")...)
	if got := strings.TrimSpace(mustCtr(t, c, "task", "exec", "--exec-id", "read", long, "/bin/cat", "/run/northstar/secret").stdout); got != e.secretHex(t) {
		t.Errorf("container read %q, want the store's secret", got)
	}
	if h := c.bundleSpec(t, long).Hooks.CreateRuntime[0]; !reflect.DeepEqual(h.Args, []string{"northstar-hook", "--config", e.config}) {
		t.Errorf("hook args %q, want --config %s", h.Args, e.config)
	}
}

// mustCtr runs ctr and fails the test, printing everything, if it fails.
func mustCtr(t *testing.T, c *rootlessContainerd, args ...string) result {
	t.Helper()
	r := c.ctr(t, args...)
	if r.err != nil {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

// replaceFile rewrites path keeping its owner and mode.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}
