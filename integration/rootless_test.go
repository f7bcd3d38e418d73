// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runcAs runs the bundle with runc as the unprivileged account, either
// directly (plain rootless runc) or as root of rootlesskit's user namespace,
// the way rootless containerd runs it.
func (b *bundle) runcAs(t *testing.T, a *account, underRootlesskit bool) result {
	t.Helper()
	var via []string
	if underRootlesskit {
		seq := containerSeq.Add(1)
		via = []string{"rootlesskit", "--net=slirp4netns", "--disable-host-loopback",
			"--copy-up=/etc", "--copy-up=/run", "--state-dir=" + filepath.Join(filepath.Dir(b.dir), fmt.Sprintf("rootlesskit-%d", seq))}
	}
	return b.runcVia(t, a, via...)
}

// runcIn runs the bundle with runc as root of rootless containerd c's
// namespaces (rootlesskit's), where c's agent runs too.
func (b *bundle) runcIn(t *testing.T, a *account, c *rootlessContainerd) result {
	t.Helper()
	return b.runcVia(t, a, c.script, "exec", c.dir)
}

// runcVia runs the bundle with runc as the account, through the command
// via (none: plain rootless runc).
func (b *bundle) runcVia(t *testing.T, a *account, via ...string) result {
	t.Helper()
	// `runc spec --rootless` ran as root and mapped the container's root to
	// uid 0; map it to the account that runs runc.
	for i := range b.spec.Linux.UIDMappings {
		b.spec.Linux.UIDMappings[i].HostID = a.uid
	}
	for i := range b.spec.Linux.GIDMappings {
		b.spec.Linux.GIDMappings[i].HostID = a.gid
	}
	b.write(t)
	a.chownR(t, b.dir)
	work := filepath.Dir(b.dir)
	seq := containerSeq.Add(1)
	id := fmt.Sprintf("ns-rl-%d-%d", os.Getpid(), seq)
	args := append(via, "runc", "--root", filepath.Join(work, "runc-rootless"), "run", "--bundle", b.dir, id)
	// runc hands its stdio to the container and, rootless, must be able to
	// fchown it: so stdio are files the account creates, not our pipes.
	out, errf := filepath.Join(work, id+".out"), filepath.Join(work, id+".err")
	cmd := exec.Command("sh", append([]string{"-c", `o=$1 e=$2; shift 2; exec "$@" </dev/null >"$o" 2>"$e"`, "sh", out, errf}, args...)...)
	a.apply(cmd)
	cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+work)
	r := run(t, cmd)
	r.cmd = strings.Join(args, " ")
	stdout, _ := os.ReadFile(out)
	stderr, _ := os.ReadFile(errf)
	r.stdout, r.stderr = string(stdout), string(stderr)
	return r
}

// TestRootlessRuncUnderRootlesskit is the rootless-containerd situation: runc
// runs as root inside rootlesskit's user namespace, as an unprivileged host
// user, and the hook joins the container's mount namespace at createRuntime.
func TestRootlessRuncUnderRootlesskit(t *testing.T) {
	requires(t, "runc", "rootlesskit", "slirp4netns", "newuidmap")
	a := unprivileged(t)
	e := newEnv(t, "", a)
	want := e.secretHex(t)

	for _, user := range []specs.User{{UID: 0, GID: 0}, {UID: 1000, GID: 1000}} {
		t.Run(fmt.Sprintf("process user %d", user.UID), func(t *testing.T) {
			b := newBundle(t, e.dir, false, probe).withHook("createRuntime", e.config)
			b.spec.Process.User = user
			// No cgroup limits: an unprivileged user cannot set them on
			// this cgroup v1 host.
			b.spec.Linux.Resources = nil
			r := b.runcAs(t, a, true)
			if r.err != nil {
				t.Fatalf("container failed:\n%s", r)
			}
			if got := field(r.stdout, "secret"); got != want {
				t.Fatalf("read %q, want the lifecycle secret\n%s", got, r)
			}
			if o, w := field(r.stdout, "owner"), fmt.Sprintf("%d:%d:400", user.UID, user.GID); o != w {
				t.Errorf("owner = %s, want %s", o, w)
			}
			if field(r.stdout, "write") == "0" || field(r.stdout, "create") == "0" {
				t.Errorf("the container could write to its secret mount\n%s", r)
			}
		})
	}

	t.Run("hostile mount targets", func(t *testing.T) {
		runHostile(t, mountTargetImages, want,
			func(t *testing.T) *bundle {
				b := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config)
				b.spec.Linux.Resources = nil
				return b
			},
			func(t *testing.T, b *bundle) result { return b.runcAs(t, a, true) })
	})

	t.Run("hostile /run symlink", func(t *testing.T) {
		host := filepath.Join(e.dir, "host-victim")
		if err := os.MkdirAll(host, 0o777); err != nil {
			t.Fatal(err)
		}
		b := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config)
		b.spec.Linux.Resources = nil
		if err := os.Symlink(host, filepath.Join(b.rootfs, "run")); err != nil {
			t.Fatal(err)
		}
		r := b.runcAs(t, a, true)
		if r.err == nil || !strings.Contains(r.stderr, "northstar-hook: mount: resolve /run/northstar") {
			t.Errorf("want the hook to refuse the image:\n%s", r)
		}
		if ents, _ := os.ReadDir(host); len(ents) != 0 {
			t.Errorf("the host directory was written to: %v", ents)
		}
	})
}

// TestRootlessRuncPlain: plain rootless runc (`runc spec --rootless`) cannot
// let a hook setns into the container, so the hook runs at createContainer,
// inside the container's user and mount namespaces.
func TestRootlessRuncPlain(t *testing.T) {
	requires(t, "runc")
	a := unprivileged(t)
	e := newEnv(t, "", a)
	want := e.secretHex(t)

	b := newBundle(t, e.dir, true, probe).withHook("createContainer", e.config)
	r := b.runcAs(t, a, false)
	if r.err != nil {
		t.Fatalf("container failed:\n%s", r)
	}
	if got := field(r.stdout, "secret"); got != want {
		t.Fatalf("read %q, want the lifecycle secret\n%s", got, r)
	}
	if o := field(r.stdout, "owner"); o != "0:0:400" {
		t.Errorf("owner = %s, want 0:0:400", o)
	}
	opts := field(r.stdout, "opts")
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec", "nosymfollow"} {
		if !contains(strings.Split(opts, ","), o) {
			t.Errorf("mount options %s lack %s", opts, o)
		}
	}

	t.Run("hostile mount targets", func(t *testing.T) {
		runHostile(t, mountTargetImages, want,
			func(t *testing.T) *bundle {
				return newBundle(t, e.dir, true, "cat /run/northstar/secret").withHook("createContainer", e.config)
			},
			func(t *testing.T, b *bundle) result { return b.runcAs(t, a, false) })
	})

	// At createRuntime the hook cannot enter the container: it must fail
	// closed and say where to configure it instead.
	b2 := newBundle(t, e.dir, true, "echo started").withHook("createRuntime", e.config)
	r2 := b2.runcAs(t, a, false)
	if r2.err == nil || strings.Contains(r2.stdout, "started") {
		t.Fatalf("container started without its secret:\n%s", r2)
	}
	if !strings.Contains(r2.stderr, "configure the hook at createContainer") {
		t.Errorf("error does not name the fix:\n%s", r2)
	}
}

// TestRootlessRuncPlainAPI: plain rootless runc with [api] enable. Neither
// stage alone can do both halves (createRuntime cannot enter the
// container; inside it, the agent refuses a hook of another mount
// namespace), so northstar runs at both: createRuntime registers, and
// createContainer mounts the secret and the registered API directory.
func TestRootlessRuncPlainAPI(t *testing.T) {
	requires(t, "runc")
	a := unprivileged(t)
	sock := agentSocket(t, a)
	e := newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", sock), a)
	ag := startAgentAs(t, a, e, sock)

	// The hooks exactly as a user gets them: northstarctl's stdout.
	var snippet struct{ Hooks specs.Hooks }
	out := mustRun(t, exec.Command(bins.ctl, "config", "runc", "--rootless", "--config", e.config)).stdout
	if err := json.Unmarshal([]byte(out), &snippet); err != nil || len(snippet.Hooks.CreateRuntime) != 1 || len(snippet.Hooks.CreateContainer) != 1 {
		t.Fatalf("config runc --rootless with [api] enable: want one hook at createRuntime and one at createContainer (%v):\n%s", err, out)
	}
	for _, h := range []*specs.Hook{&snippet.Hooks.CreateRuntime[0], &snippet.Hooks.CreateContainer[0]} {
		h.Path = bins.hook // the snippet names the installed path
	}
	inRootless := func(identity, script string, stages ...string) result {
		t.Helper()
		b := newBundle(t, e.dir, true, script).withNsapi(t, identity)
		b.spec.Hooks = &specs.Hooks{}
		for _, s := range stages {
			switch s {
			case "createRuntime":
				b.spec.Hooks.CreateRuntime = snippet.Hooks.CreateRuntime
			case "createContainer":
				b.spec.Hooks.CreateContainer = snippet.Hooks.CreateContainer
			}
		}
		return b.runcAs(t, a, false)
	}
	both := []string{"createRuntime", "createContainer"}
	r := inRootless("client", "nsapi identity; cat /run/northstar/secret; echo; ls -A /run/northstar/api; touch /run/northstar/api/x 2>/dev/null && echo WROTE; true", both...)
	if r.err != nil {
		t.Fatalf("container failed:\n%s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "client ") || lines[1] != e.secretHex(t) || lines[2] != "api.sock" {
		t.Fatalf("want identity client, the secret and api.sock alone, read-only; got:\n%s", r)
	}

	// Tokens between plain rootless containers.
	checkTokens(t, func(identity, script string) result { return inRootless(identity, script, both...) })

	// Only createContainer: nothing registered the container, so the start
	// fails and says how to configure the hook.
	r = inRootless("client", "echo STARTED", "createContainer")
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "northstarctl config runc --rootless") {
		t.Errorf("a container nobody registered started, or the error does not name the fix:\n%s", r)
	}

	// The agent down: the createRuntime stage fails closed naming it.
	if err := ag.stop(t); err != nil {
		t.Logf("agent exit: %v", err)
	}
	r = inRootless("client", "echo STARTED", both...)
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "start 'northstarctl agent'") {
		t.Errorf("container started with the agent down, or the error does not name the agent:\n%s", r)
	}
}
