// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/store"
)

// nsapiBinary builds integration/nsapi (static) once per run into bins.dir.
var nsapiBinary = sync.OnceValues(func() (string, error) {
	out := filepath.Join(bins.dir, "nsapi")
	return out, buildStatic("..", "./integration/nsapi", out)
})

// apiEnv is a host-sealer env with the agent and its API ([api] enable).
func apiEnv(t *testing.T) (*env, string) {
	t.Helper()
	sock := agentSocket(t, nil)
	return newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", sock), nil), sock
}

// apiBundle is a busybox bundle with nsapi in /bin, speaking as identity
// ("" for none: the container id), running script.
func apiBundle(t *testing.T, e *env, identity, script string) *bundle {
	t.Helper()
	return newBundle(t, e.dir, false, script).withHook("createRuntime", e.config).withNsapi(t, identity)
}

// withNsapi puts nsapi in the bundle's /bin and, unless identity is "",
// the identity annotation on its spec.
func (b *bundle) withNsapi(t *testing.T, identity string) *bundle {
	t.Helper()
	b.withHelper(t, nsapiBinary)
	if identity != "" {
		if b.spec.Annotations == nil {
			b.spec.Annotations = map[string]string{}
		}
		b.spec.Annotations["io.northstar.identity"] = identity
	}
	return b
}

// withHelper copies the helper binary built (once) by build into the
// bundle's /bin, under its own name.
func (b *bundle) withHelper(t *testing.T, build func() (string, error)) *bundle {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.rootfs, "bin", filepath.Base(bin)), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

// in runs script in a fresh container speaking as identity and returns its
// trimmed stdout, failing the test if the container fails.
func in(t *testing.T, e *env, identity, script string) string {
	t.Helper()
	r := apiBundle(t, e, identity, script).runcRun(t)
	if r.err != nil {
		t.Fatalf("container %s failed:\n%s", identity, r)
	}
	return strings.TrimSpace(r.stdout)
}

// TestAPIIdentityTokensKeys: with [api] enable, every container has its own
// API socket and speaks through it as its identity, nobody else.
func TestAPIIdentityTokensKeys(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)

	// Identity rules: the annotation, else the container id.
	if got := in(t, e, "client", "nsapi identity"); !strings.HasPrefix(got, "client ") {
		t.Errorf("identity %q, want client", got)
	}
	if got := in(t, e, "", "nsapi identity"); !strings.HasPrefix(got, "ns-it-") {
		t.Errorf("identity without the annotation %q, want the container id", got)
	}
	r := apiBundle(t, e, "two words", "echo STARTED").runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "io.northstar.identity") {
		t.Errorf("a malformed identity annotation did not stop the container naming it:\n%s", r)
	}
	// Its own socket only, read-only.
	ls := in(t, e, "client", "ls -A /run/northstar/api; touch /run/northstar/api/x 2>/dev/null && echo WROTE; grep ' /run/northstar/api ' /proc/self/mountinfo")
	if !strings.HasPrefix(ls, "api.sock\n") || strings.Contains(ls, "WROTE") || !strings.Contains(ls, " ro,") {
		t.Errorf("the API directory is not the container's socket alone, read-only:\n%s", ls)
	}

	// Out of the shared secret, still itself: an API-only container; and
	// out of both, nothing at all.
	only := apiBundle(t, e, "apionly", "test -e /run/northstar/secret && echo SECRET; nsapi identity; ls -A /run/northstar")
	only.spec.Annotations["io.northstar.secret.disable"] = "true"
	if r := only.runcRun(t); r.err != nil || !strings.HasPrefix(r.stdout, "apionly ") || strings.Contains(r.stdout, "SECRET") || !strings.HasSuffix(r.stdout, "\napi\n") {
		t.Errorf("an API-only container: want its identity and api/ alone under /run/northstar:\n%s", r)
	}
	none := apiBundle(t, e, "none", "test -e /run/northstar && echo PRESENT || echo ABSENT")
	none.spec.Annotations["io.northstar.secret.disable"] = "true"
	none.spec.Annotations["io.northstar.api.disable"] = "true"
	if r := none.runcRun(t); r.err != nil || strings.TrimSpace(r.stdout) != "ABSENT" {
		t.Errorf("a container out of the secret and the API:\n%s", r)
	}

	// A token verifies once, for its audience only.
	tok := in(t, e, "client", "nsapi token server mqtt")
	if got := in(t, e, "mallory", "nsapi verify "+tok+" client mqtt"); got != "wrong-audience" {
		t.Errorf("another container verified the server's token: %q", got)
	}
	if got := in(t, e, "server", "nsapi verify "+tok+" client http"); got != "wrong-app" {
		t.Errorf("wrong app: %q", got)
	}
	if got := in(t, e, "server", "nsapi verify "+tok+" client mqtt; nsapi verify "+tok+" client mqtt"); got != "valid\nreplayed" {
		t.Errorf("verify twice: %q, want valid then replayed", got)
	}
	// A token from mallory never passes as client's.
	mtok := in(t, e, "mallory", "nsapi token server mqtt")
	if got := in(t, e, "server", "nsapi verify "+mtok+" client mqtt"); got != "wrong-sender" {
		t.Errorf("mallory's token as client's: %q", got)
	}

	// Signatures verify only under the signer's identity.
	sig := in(t, e, "client", "nsapi sign hello")
	if got := in(t, e, "server", "nsapi verify-sig client hello "+sig+"; nsapi verify-sig mallory hello "+sig); got != "true\nfalse" {
		t.Errorf("signature checks: %q, want true then false", got)
	}
	// Pairwise keys: the same both ways, per pair and app, not the secret.
	ab := in(t, e, "client", "nsapi derive server mqtt")
	ba := in(t, e, "server", "nsapi derive client mqtt")
	other := in(t, e, "mallory", "nsapi derive server mqtt")
	app := in(t, e, "client", "nsapi derive server http")
	if len(ab) != 64 || ab != ba || ab == other || ab == app || ab == e.secretHex(t) {
		t.Errorf("derive: client->server %s, server->client %s, mallory->server %s, other app %s", ab, ba, other, app)
	}
}

// TestAPITokensAtOnce: 8 containers mint 100 tokens each at the same time;
// the server container verifies all 800.
func TestAPITokensAtOnce(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	startAgent(t, e, sock)
	const n, each = 8, 100
	outs := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		b := apiBundle(t, e, "client", fmt.Sprintf("nsapi tokens server mqtt %d", each))
		wg.Add(1)
		go func() { defer wg.Done(); outs[i] = b.runcRun(t) }()
	}
	wg.Wait()
	var all []string
	for _, r := range outs {
		if r.err != nil {
			t.Fatalf("a minting container failed:\n%s", r)
		}
		all = append(all, strings.Fields(r.stdout)...)
	}
	if len(all) != n*each {
		t.Fatalf("%d tokens minted, want %d", len(all), n*each)
	}
	b := apiBundle(t, e, "server", "nsapi verify-all client mqtt < /tokens")
	if err := os.WriteFile(filepath.Join(b.rootfs, "tokens"), []byte(strings.Join(all, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := b.runcRun(t)
	if r.err != nil || strings.TrimSpace(r.stdout) != fmt.Sprintf("%d/%d", n*each, n*each) {
		t.Fatalf("verifying the tokens:\n%s", r)
	}
}

// TestAPIAgentDownAndBack: without the agent an API container does not
// start (the error names the agent); a running container's API comes back
// when the agent restarts; its socket goes when the container is deleted.
func TestAPIAgentDownAndBack(t *testing.T) {
	requires(t, "runc", "curl")
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)

	b := apiBundle(t, e, "client", "sleep 600")
	b.write(t)
	root := filepath.Join(e.dir, "runc-root")
	id := fmt.Sprintf("ns-api-%d", os.Getpid())
	t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "-f", id).Run() })
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	detached := exec.Command("runc", "--root", root, "run", "--detach", "--bundle", b.dir, id)
	detached.Stdin, detached.Stdout, detached.Stderr = devnull, devnull, devnull
	if err := detached.Run(); err != nil {
		t.Fatalf("runc run --detach: %v", err)
	}
	exec1 := func() result {
		return run(t, exec.Command("runc", "--root", root, "exec", id, "/bin/nsapi", "identity"))
	}
	if r := exec1(); r.err != nil || !strings.HasPrefix(r.stdout, "client ") {
		t.Fatalf("the running container's API:\n%s", r)
	}
	apiDir := registeredDir(t, sock, id)
	// curl speaks to it too, as the README shows.
	if r := run(t, exec.Command("curl", "-sS", "--unix-socket", filepath.Join(apiDir, "api.sock"), "http://northstar/v1/identity")); r.err != nil || !strings.Contains(r.stdout, `"identity":"client"`) {
		t.Errorf("curl --unix-socket:\n%s", r)
	}

	a.stop(t)
	r := apiBundle(t, e, "client", "echo STARTED").runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "northstar-hook: api: agent at "+sock+" not reachable") {
		t.Errorf("an API container started, or was refused without naming the agent, while no agent runs:\n%s", r)
	}
	if r := exec1(); r.err == nil {
		t.Errorf("the API answered while no agent runs:\n%s", r)
	}

	startAgent(t, e, sock)
	if r := exec1(); r.err != nil || !strings.HasPrefix(r.stdout, "client ") {
		t.Fatalf("after the agent restarted, the running container's API:\n%s", r)
	}

	if err := exec.Command("runc", "--root", root, "delete", "-f", id).Run(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(apiDir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the API socket of a deleted container stays")
		}
	}
}

// TestAuditVerify: the agent's log of a session verifies with
// `northstarctl audit verify`; an edited line makes it exit 1 naming the
// line.
func TestAuditVerify(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)
	tok := in(t, e, "client", "nsapi token server mqtt")
	in(t, e, "server", "nsapi verify "+tok+" client mqtt")
	a.stop(t)
	log := filepath.Join(e.cfg.StateDir, audit.FileName)
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"lifecycle-started", "container-registered", "token-issued", "token-verified"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	if strings.Contains(string(data), tok) || strings.Contains(string(data), e.secretHex(t)) {
		t.Error("the audit log holds a token or the secret")
	}
	if r := e.ctl(t, "audit", "verify"); r.err != nil || !strings.Contains(r.stdout, "chain and MACs intact") {
		t.Fatalf("audit verify of an intact log:\n%s", r)
	}
	lines := strings.Split(string(data), "\n")
	lines[2] = strings.Replace(lines[2], "client", "clienT", 1)
	if err := os.WriteFile(log, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.ctl(t, "audit", "verify")
	var ee *exec.ExitError
	if !errors.As(r.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(r.stderr, "line 3") {
		t.Errorf("audit verify of an edited log: want exit 1 naming line 3:\n%s", r)
	}
}

// TestAuditVerifyRecordedHead: `northstarctl rotate`, while the agent
// runs, records the audit log's head in the sealed record; cutting the log
// below it makes `audit verify` exit 1 naming the cut and the generation,
// while a cut of only the lines written since (the documented limit)
// still verifies.
func TestAuditVerifyRecordedHead(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)
	tok := in(t, e, "client", "nsapi token server mqtt")
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	in(t, e, "server", "nsapi verify "+tok+" client mqtt")
	a.stop(t)

	data, err := os.ReadFile(filepath.Join(e.cfg.StateDir, store.RecordFile))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.DecodeRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	head := rec.AuditHead
	if head == nil || head.Lines < 3 {
		t.Fatalf("rotate recorded no head of the agent's log (lifecycle-started, container-registered, token-issued at least): %+v", head)
	}
	log := filepath.Join(e.cfg.StateDir, audit.FileName)
	data, err = os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	if uint64(len(lines)-1) <= head.Lines {
		t.Fatalf("no lines after the head (line %d of %d): the test would not tell a cut above it from one below", head.Lines, len(lines)-1)
	}
	want := fmt.Sprintf("reaches the head recorded at the rotation to generation %d (line %d)", rec.Generation, head.Lines)
	if r := e.ctl(t, "audit", "verify"); r.err != nil || !strings.Contains(r.stdout, want) {
		t.Fatalf("audit verify of an intact log: want %q:\n%s", want, r)
	}
	cut := func(n uint64) {
		t.Helper()
		if err := os.WriteFile(log, []byte(strings.Join(lines[:n], "")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cut(head.Lines)
	if r := e.ctl(t, "audit", "verify"); r.err != nil {
		t.Errorf("audit verify of a log cut to its recorded head (undetectable by design):\n%s", r)
	}
	cut(head.Lines - 1)
	r := e.ctl(t, "audit", "verify")
	want = fmt.Sprintf("ends at line %d, but the head recorded at the rotation to generation %d is line %d", head.Lines-1, rec.Generation, head.Lines)
	var ee *exec.ExitError
	if !errors.As(r.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("audit verify of a log cut below its recorded head: want exit 1 and %q:\n%s", want, r)
	}

	// The agent will not extend that log: it refuses to start, naming the
	// way out. audit reset keeps the files aside, and an agent starts a
	// new log; a reset beside a running agent is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // an agent that starts would serve forever
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.ctl, "agent", "--config", e.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "audit log does not verify") || !strings.Contains(string(out), "northstarctl audit reset") {
		t.Fatalf("an agent on a cut log: %v, want a refusal naming the reset:\n%s", err, out)
	}
	if r := e.ctl(t, "audit", "reset"); r.err != nil || !strings.Contains(r.stdout, "moved the audit log to") {
		t.Fatalf("audit reset:\n%s", r)
	}
	startAgent(t, e, sock)
	if r := e.ctl(t, "audit", "reset"); r.err == nil || !strings.Contains(r.stderr, "stop it first") {
		t.Errorf("audit reset beside a running agent:\n%s", r)
	}
	if r := e.ctl(t, "audit", "verify"); r.err != nil || !strings.Contains(r.stdout, "chain and MACs intact") {
		t.Errorf("audit verify of the new log:\n%s", r)
	}
}

// TestAPIRootlessContainerd: the agent runs in rootless containerd's
// namespaces (where the runtime and the hook run), and containers of the
// northstar runtime, under Debian's containerd 1.6 and 2.4.2, get their
// own API socket through the shim and the hook.
func TestAPIRootlessContainerd(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, a *account, flavor []string) {
		nsapi, err := nsapiBinary()
		if err != nil {
			t.Fatal(err)
		}
		sock := agentSocket(t, a)
		e := newEnv(t, fmt.Sprintf("[agent]\nsocket = %q\n[api]\nenable = true\n", sock), a)
		c := startContainerd(t, a, append(flavor, "NORTHSTAR_CONFIG="+e.config)...)
		data, err := os.ReadFile(nsapi)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.rootfs, "bin", "nsapi"), data, 0o755); err != nil {
			t.Fatal(err)
		}
		a.chownR(t, filepath.Join(c.rootfs, "bin", "nsapi"))

		startAgentIn(t, c, e, sock)
		runAs := func(identity string, cmd ...string) result {
			args := []string{"run", "--rm"}
			args = append(args, ctrRunFlags...)
			args = append(args, "--runtime", northstarRuntime, "--annotation", "io.northstar.identity="+identity,
				"--rootfs", c.rootfs, c.newID("api"))
			return c.ctr(t, append(args, cmd...)...)
		}
		if r := runAs("client", "/bin/nsapi", "identity"); r.err != nil || !strings.HasPrefix(r.stdout, "client ") {
			t.Fatalf("a rootless containerd container's API:\n%s", r)
		}
		tok := runAs("client", "/bin/nsapi", "token", "server", "mqtt")
		if tok.err != nil {
			t.Fatalf("token:\n%s", tok)
		}
		if r := runAs("server", "/bin/nsapi", "verify", strings.TrimSpace(tok.stdout), "client", "mqtt"); r.err != nil || strings.TrimSpace(r.stdout) != "valid" {
			t.Errorf("verify in the server container:\n%s", r)
		}
	})
}

// TestAPIRuncUnderRootlesskit: runc itself under rootlesskit (as rootless
// containerd runs it), with the agent in the same namespaces: the hook at
// createRuntime registers there and mounts the container's socket.
func TestAPIRuncUnderRootlesskit(t *testing.T) {
	a := requiresContainerd(t)
	sock := agentSocket(t, a)
	e := newEnv(t, fmt.Sprintf("[agent]\nsocket = %q\n[api]\nenable = true\n", sock), a)
	c := startContainerd(t, a, "NORTHSTAR_CONFIG="+e.config) // for its namespaces
	startAgentIn(t, c, e, sock)
	in := func(identity, script string) result {
		t.Helper()
		return newBundle(t, e.dir, false, script).withHook("createRuntime", e.config).withNsapi(t, identity).runcIn(t, a, c)
	}
	checkOwnSocket(t, in)
	checkTokens(t, in)
}

// checkOwnSocket: a container started by in (running script as identity)
// speaks as client on a socket of its own, alone in a read-only directory.
func checkOwnSocket(t *testing.T, in func(identity, script string) result) {
	t.Helper()
	r := in("client", "nsapi identity; ls -A /run/northstar/api; touch /run/northstar/api/x 2>/dev/null && echo WROTE; true")
	if r.err != nil || !strings.HasPrefix(r.stdout, "client ") || !strings.HasSuffix(r.stdout, "\napi.sock\n") {
		t.Fatalf("want identity client and api.sock alone, read-only:\n%s", r)
	}
}

// checkTokens: between containers started by in, a token client mints
// for server verifies in server, and not in another container.
func checkTokens(t *testing.T, in func(identity, script string) result) {
	t.Helper()
	tok := in("client", "nsapi token server mqtt")
	if tok.err != nil {
		t.Fatalf("token:\n%s", tok)
	}
	if v := in("mallory", "nsapi verify "+strings.TrimSpace(tok.stdout)+" client mqtt"); strings.TrimSpace(v.stdout) != "wrong-audience" {
		t.Errorf("another container verified the server's token:\n%s", v)
	}
	if v := in("server", "nsapi verify "+strings.TrimSpace(tok.stdout)+" client mqtt"); v.err != nil || strings.TrimSpace(v.stdout) != "valid" {
		t.Errorf("the server container did not verify the client's token:\n%s", v)
	}
}

// startAgentIn starts the agent (`northstarctl agent`, with [api] enable)
// the way a user would, with `rootless-containerd.sh agent`: inside rootless
// containerd c's namespaces as the runtime's user, where runc and the hook
// run, with containerd's NORTHSTAR_CONFIG (e's). The script's stop, in c's
// cleanup, stops it.
func startAgentIn(t *testing.T, c *rootlessContainerd, e *env, sock string) {
	t.Helper()
	mustRun(t, exec.Command(c.script, "agent", c.dir))
	if _, err := os.Stat(sock); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "agent.log"))
		t.Fatalf("the agent serves, but not on %s (is %s containerd's NORTHSTAR_CONFIG?): %v\n%s", sock, e.config, err, log)
	}
}
