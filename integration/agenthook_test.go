// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/northstar-oci/northstar/hook/delivery"
)

// loneAgentHook copies northstar-agent-hook into a directory of its own
// under dir: with no northstar-hook beside it (nor on PATH) a start the
// agent does not serve fails instead of becoming northstar-hook, so a row
// that times it times only starts the agent served.
func loneAgentHook(t *testing.T, dir string) string {
	t.Helper()
	lone := filepath.Join(dir, "lone", filepath.Base(bins.agentHook))
	if err := os.MkdirAll(filepath.Dir(lone), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(bins.agentHook, lone); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("northstar-hook"); err == nil {
		t.Fatal("northstar-hook is on PATH: a start the agent does not serve would not fail")
	}
	return lone
}

// TestAgentHook: with the agent running, northstar-agent-hook has the
// agent do the hook's work: the container reads the secret and has its
// API socket. The hook is alone in its directory, so a start the agent
// did not serve would fail instead of becoming northstar-hook.
func TestAgentHook(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	lone := loneAgentHook(t, e.dir)
	b := newBundle(t, e.dir, false, "test -S /run/northstar/api/api.sock && cat /run/northstar/secret").withHookBinary(lone, "createRuntime", e.config)
	r := b.runcRun(t)
	if r.err != nil || strings.TrimSpace(r.stdout) != e.secretHex(t) {
		t.Fatalf("container through northstar-agent-hook did not read the secret and find its API socket:\n%s", r)
	}
}

// TestAgentHookFastPath: served by the agent, northstar-agent-hook starts
// no thread and execs nothing (its C fast path, hook/agenthook/fastpath,
// did the start before the Go runtime would have started), and the
// container reads its secret; with NORTHSTAR_AGENT_HOOK_NO_FAST_PATH=1 in
// the hook's environment the Go hook serves it, and its threads show.
func TestAgentHookFastPath(t *testing.T) {
	requires(t, "runc", "strace")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	lone := loneAgentHook(t, e.dir)
	for _, tc := range []struct {
		name string
		env  []string
		fast bool
	}{{"fast path", nil, true}, {"Go hook", []string{"NORTHSTAR_AGENT_HOOK_NO_FAST_PATH=1"}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t, e.dir, false, "test -S /run/northstar/api/api.sock && cat /run/northstar/secret").withHookBinary(lone, "createRuntime", e.config)
			b.spec.Hooks.CreateRuntime[0].Env = tc.env
			trace := filepath.Join(t.TempDir(), "strace")
			r := b.runWrapped(t, "runc", "strace", "-f", "-o", trace, "-e", "trace=execve,clone,clone3,fork,vfork")
			if r.err != nil || strings.TrimSpace(r.stdout) != e.secretHex(t) {
				t.Fatalf("container through northstar-agent-hook did not read the secret and find its API socket:\n%s", r)
			}
			data, err := os.ReadFile(trace)
			if err != nil {
				t.Fatal(err)
			}
			log := straceLog(data)
			hooks := log.execsOf(filepath.Base(lone), "")
			if len(hooks) != 1 {
				t.Fatalf("traced %d runs of the hook, want 1:\n%s", len(hooks), log)
			}
			if h := hooks[0]; h.next != "" || (h.threads == 0) != tc.fast {
				t.Errorf("the hook started %d threads and exec'd %q; want the fast path %v:\n%s", h.threads, h.next, tc.fast, log)
			}
		})
	}
}

// TestAgentHookFallsBack: where the agent does not serve a start (none
// runs; it runs with another config file), northstar-agent-hook becomes
// northstar-hook, which does the start itself; alone in its directory it
// fails instead, naming why the agent did not serve.
func TestAgentHookFallsBack(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	lone := loneAgentHook(t, e.dir)
	run := func(hook string) result {
		return newBundle(t, e.dir, false, "cat /run/northstar/secret").withHookBinary(hook, "createRuntime", e.config).runcRun(t)
	}
	// started: whether northstar-hook, taking the start over, can start
	// this API container (it needs the agent for the API socket).
	check := func(why string, started bool) {
		t.Helper()
		r := run(bins.agentHook)
		switch {
		case started && (r.err != nil || strings.TrimSpace(r.stdout) != e.secretHex(t)):
			t.Errorf("%s: northstar-hook, taking the start over, did not deliver:\n%s", why, r)
		case !started && (r.err == nil || !strings.Contains(r.stderr, "northstar-hook: api: ")):
			t.Errorf("%s: northstar-hook did not take the start over (and fail it without the agent):\n%s", why, r)
		}
		if r := run(lone); r.err == nil || !strings.Contains(r.stderr, "not served by the agent: "+why) || !strings.Contains(r.stderr, "northstar-hook is neither next to") {
			t.Errorf("%s: the lone northstar-agent-hook did not fail naming why:\n%s", why, r)
		}
	}
	check("no agent at "+sock, false)

	// The agent with a copy of the config at another path: not the file
	// the hook was given.
	other := filepath.Join(e.dir, "other.toml")
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, data, 0o644); err != nil {
		t.Fatal(err)
	}
	startAgentCmd(t, exec.Command(bins.ctl, "agent", "--config", other), sock)
	check("the hook's config "+e.config+" is not the agent's", true)

	// Served again once the hook is given the agent's file.
	b := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHookBinary(lone, "createRuntime", other)
	if r := b.runcRun(t); r.err != nil || strings.TrimSpace(r.stdout) != e.secretHex(t) {
		t.Errorf("the agent did not serve a hook given its own config:\n%s", r)
	}
}

// TestAgentHookFailsClosed: what the agent answers after taking a start
// is final: its error fails the start with the hook's one line.
func TestAgentHookFailsClosed(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	b := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHookBinary(bins.agentHook, "createRuntime", e.config)
	b.spec.Annotations = map[string]string{delivery.AnnotationUID: "not-a-uid"}
	r := b.runcRun(t)
	if r.err == nil || !strings.Contains(r.stderr, "northstar-agent-hook: policy: ") || strings.Contains(r.stderr, "northstar-hook:") {
		t.Errorf("a start the agent refused did not fail with its line (and only its):\n%s", r)
	}
}

// TestAgentHookHostileImages is the hostile-image table through
// northstar-agent-hook: the agent resolves /run/northstar in the image and
// mounts there (on a thread in the container's mount namespace) with the
// hook's own checks and refusals; the host directory and mount table stay
// as they were.
func TestAgentHookHostileImages(t *testing.T) {
	requires(t, "runc")
	e, sock := liveEnv(t, "5m", "")
	startAgent(t, e, sock)
	lone := loneAgentHook(t, e.dir)
	runHostile(t, append(hostileImages, mountTargetImages...), e.secretHex(t),
		func(t *testing.T) *bundle {
			return newBundle(t, e.dir, false, "cat /run/northstar/secret").withHookBinary(lone, "createRuntime", e.config)
		},
		func(t *testing.T, b *bundle) result { return b.runcRun(t) })
}

// copyFile copies the executable src to dst.
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// TestAgentHookConcurrentStarts: sixteen containers started at once
// through northstar-agent-hook, which the agent serves concurrently
// (several starts in its process at a time): every one reads the store's
// secret and has its own API socket, and each was served (the hook is
// alone in its directory).
func TestAgentHookConcurrentStarts(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	lone := loneAgentHook(t, e.dir)
	want := e.secretHex(t)
	const n = 16
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		b := newBundle(t, e.dir, false, "test -S /run/northstar/api/api.sock && cat /run/northstar/secret").withHookBinary(lone, "createRuntime", e.config)
		b.write(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = b.runcRun(t)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || strings.TrimSpace(r.stdout) != want {
			t.Errorf("container %d of %d started at once:\n%s", i, n, r)
		}
	}
}
