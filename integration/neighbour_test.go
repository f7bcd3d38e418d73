// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/audit"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The agent under a hostile neighbour (DESIGN.md §11): one test per
// attack of the table there, each with real runc containers as the
// attacker and the victim, each checking what the victim still gets.

// apiEnvWith is apiEnv with more config: extra goes after the [api]
// table's enable line (more [api] keys, then other tables).
func apiEnvWith(t *testing.T, extra string) (*env, string) {
	t.Helper()
	sock := agentSocket(t, nil)
	return newEnvWith(t, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n%s", sock, extra), nil), sock
}

// victim is a pair of running API containers, client and server: the
// victim of each attack, whose API must keep working.
type victim struct {
	e      *env
	server *detached
}

func newVictim(t *testing.T, e *env) *victim {
	t.Helper()
	root := filepath.Join(e.dir, "runc-victim")
	return &victim{e: e, server: apiBundle(t, e, "server", "sleep 600").runDetached(t, root, fmt.Sprintf("victim-%d", containerSeq.Add(1)))}
}

// check asserts the victim's API works: identity round trips without a
// failure, and a client's fresh token verifying once on the server. It
// returns the round trips' numbers.
func (v *victim) check(t *testing.T) string {
	t.Helper()
	tok := in(t, v.e, "client", "nsapi token server mqtt")
	if got := v.server.sh(t, "nsapi verify "+tok+" client mqtt; nsapi verify "+tok+" client mqtt"); got != "valid\nreplayed" {
		t.Errorf("the victim's token: %q, want valid then replayed", got)
	}
	rtt := v.server.sh(t, "nsapi rtt 200")
	if !strings.HasSuffix(rtt, "failures=0") {
		t.Errorf("the victim's round trips: %s, want no failure", rtt)
	}
	return rtt
}

// procEntries counts the entries of /proc/PID/DIR: "fd" for the open
// files of process pid, "task" for its threads.
func procEntries(t *testing.T, pid int, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/%s", pid, dir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rssMiB is process pid's resident memory.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kib / 1024
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// TestNeighbourFillsTheReplayMemory: mallory verifies her own hour-long
// tokens until her memory of used tokens is full, and fills her share of
// the server's by having it verify hers (as an MQTT broker verifies every
// login it gets). Before, one global memory filled and every container's
// verification got 503 for up to an hour; now only hers do.
func TestNeighbourFillsTheReplayMemory(t *testing.T) {
	requires(t, "runc")
	// Small memories (and a rate that does not get in the way) so that
	// filling them takes a second; the bench fills the defaults.
	e, sock := apiEnvWith(t, "max_used_tokens = 2000\nmax_used_tokens_per_sender = 300\nrate = 100000\nburst = 100000\n")
	a := startAgent(t, e, sock)
	v := newVictim(t, e)

	got := in(t, e, "mallory", "nsapi flood-verify 2100 3600")
	// Her memory is full for an hour; everyone else's is not.
	t.Logf("mallory verifying her own 1 h tokens: %s", got)
	// Her own audience holds her tokens alone: her sender's share is
	// the bound (the audience's, 2000, is unit-tested in agent/replay).
	if got != "valid=300 busy=1800 other=0" {
		t.Errorf("mallory's own memory: %s, want 300 valid (her share), then 503", got)
	}
	toks := in(t, e, "mallory", "nsapi tokens server mqtt 350")
	if err := os.WriteFile(filepath.Join(v.server.b.rootfs, "toks"), []byte(toks+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got = v.server.sh(t, "nsapi verify-each mallory mqtt < /toks")
	t.Logf("the server verifying mallory's tokens for it: %s", got)
	if got != "valid=300 busy=50 other=0" {
		t.Errorf("mallory's share of the server's memory: %s, want 300 valid, then 503", got)
	}
	rtt := v.check(t)
	t.Logf("victim after the fill: its token valid once, identity round trips %s; agent RSS %.1f MiB", rtt, rssMiB(t, a.cmd.Process.Pid))
}

// TestNeighbourHoldsConnections: mallory opens 300 connections, each
// stalled in the middle of a request body. Before, each kept a goroutine,
// an fd and ~80 KiB of the agent forever, and 11,000 of them made the next
// container's start fail; now her socket holds at most max_connections,
// the rest wait in its backlog, and each stalled request is dropped after
// request_timeout.
func TestNeighbourHoldsConnections(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnvWith(t, "max_connections = 8\nrequest_timeout = \"2s\"\n")
	a := startAgent(t, e, sock)
	v := newVictim(t, e)
	before := procEntries(t, a.cmd.Process.Pid, "fd")

	mal := apiBundle(t, e, "mallory", "nsapi hold 300 5 > /out 2>&1; sleep 600").runDetached(t, filepath.Join(e.dir, "runc-mallory"), "mallory")
	mal.waitOut(t, "holding=", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	during := procEntries(t, a.cmd.Process.Pid, "fd")
	// A container starting now registers, and its API works.
	rtt := v.check(t)
	t.Logf("agent fds: %d before, %d while mallory holds 300 connections; victim: token valid once, round trips %s", before, during, rtt)
	// Her socket's listener and 8 connections, the victim's new
	// containers' sockets, and slack.
	if during > before+30 {
		t.Errorf("the agent holds %d more fds while one container holds 300 connections, want at most its cap", during-before)
	}
	out := mal.waitOut(t, "closed-by-agent=", 15*time.Second)
	var closed, held int
	fmt.Sscanf(out[strings.Index(out, "closed-by-agent="):], "closed-by-agent=%d of %d", &closed, &held)
	t.Logf("mallory: %s", strings.TrimSpace(out))
	if held != 300 || closed < 8 {
		t.Errorf("the agent dropped %d of %d stalled requests in 5 s, want at least a connection cap's worth (8) after request_timeout", closed, held)
	}
}

// TestNeighbourFloodsTheAuditLog: mallory sends 20,000 requests to a path
// that does not exist. Before, each refusal was an audit line, size
// rotation pruned every older file, and after an agent restart a token
// already verified verified again (the memory of used tokens was relearnt
// from the log that was left). Now every refusal is counted into one line
// per socket and interval, the history stays, and used tokens have a
// journal of their own: even an audit reset does not make one valid again.
func TestNeighbourFloodsTheAuditLog(t *testing.T) {
	requires(t, "runc")
	// A rate that lets all 20,000 through as 404s: each a refusal the
	// log used to write a line for. (Over the rate they are held and
	// answered 429 slowly: TestRateLimit, and the bench's flood.)
	e, sock := apiEnvWith(t, "rate = 100000\nburst = 100000\n[audit]\nmax_bytes = 65536\nkeep = 1\n")
	a := startAgent(t, e, sock)
	v := newVictim(t, e)
	tok := in(t, e, "client", "nsapi token server mqtt")
	if got := v.server.sh(t, "nsapi verify "+tok+" client mqtt"); got != "valid" {
		t.Fatalf("the victim's token: %s", got)
	}
	logPath := filepath.Join(e.cfg.StateDir, audit.FileName)
	marker := func() bool {
		data, _ := os.ReadFile(logPath)
		return strings.Contains(string(data), `"verifier":"server"`)
	}

	got := in(t, e, "mallory", "nsapi flood /v1/nothing 20000")
	t.Logf("mallory's 20,000 requests to an unknown path: %s", got)
	if got != "404=20000" {
		t.Errorf("mallory's flood: %s, want 20,000 refused with 404", got)
	}
	rtt := v.check(t)
	a.stop(t) // writes the last refusal count
	data, _ := os.ReadFile(logPath)
	refused := strings.Count(string(data), `"event":"refused"`)
	t.Logf("audit log after the flood: %d bytes, %d refusal line(s); victim: round trips %s", len(data), refused, rtt)
	if refused < 1 || refused > 4 || !strings.Contains(string(data), `"identity":"mallory"`) {
		t.Errorf("%d refusal lines for mallory's 20,000, want them counted in one line per 10 s", refused)
	}
	if !marker() {
		t.Error("the flood pruned the victim's verification from the audit log")
	}
	if r := e.ctl(t, "audit", "verify"); r.err != nil {
		t.Errorf("audit verify after the flood:\n%s", r)
	}
	// The used token stays used after a restart, and after the whole
	// audit history is reset.
	if r := e.ctl(t, "audit", "reset"); r.err != nil {
		t.Fatalf("audit reset:\n%s", r)
	}
	startAgent(t, e, sock)
	if got := v.server.sh(t, "nsapi verify "+tok+" client mqtt"); got != "replayed" {
		t.Errorf("a used token after an agent restart and an audit reset: %s, want replayed", got)
	}
}

// TestNeighbourTakesAnID: two containers with one container id, from two
// runc roots. Before, the second took the first's directory and unlinked
// its socket (both lost the API while their hooks reported success), and
// after an agent restart the first answered as the second's identity.
func TestNeighbourTakesAnID(t *testing.T) {
	requires(t, "runc")
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)
	alice := apiBundle(t, e, "alice", "sleep 600").runDetached(t, filepath.Join(e.dir, "runc-a"), "web")
	bob := apiBundle(t, e, "bob", "sleep 600").runDetached(t, filepath.Join(e.dir, "runc-b"), "web")
	identities := func(when string) {
		t.Helper()
		if a, b := alice.sh(t, "nsapi identity"), bob.sh(t, "nsapi identity"); !strings.HasPrefix(a, "alice ") || !strings.HasPrefix(b, "bob ") {
			t.Errorf("%s: the two containers named web answer %q and %q, want alice and bob", when, a, b)
		}
	}
	identities("both running")
	if dirs := registeredDirs(t, sock, "web"); len(dirs) != 2 || dirs[0] == dirs[1] {
		t.Errorf("registrations of id web: %v, want two directories", dirs)
	}
	a.stop(t)
	startAgent(t, e, sock)
	identities("after an agent restart")
	bob.delete(t)
	for deadline := time.Now().Add(5 * time.Second); len(registeredDirs(t, sock, "web")) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("registrations of web after bob's deletion: %v", registeredDirs(t, sock, "web"))
		}
	}
	if got := alice.sh(t, "nsapi identity"); !strings.HasPrefix(got, "alice ") {
		t.Errorf("bob's deletion took alice's socket: %q", got)
	}
}

// TestNeighbourFillsTheDisk: mallory fills the disk the state directory
// is on. Before, a partial audit line stayed in the file and the next
// agent start refused the log as tampered (every API container's start
// failed until 'audit reset'), and a verification whose line could not be
// written was answered valid. Now what cannot be recorded is not answered
// (503), no partial line or record stays, and the agent starts again.
func TestNeighbourFillsTheDisk(t *testing.T) {
	requires(t, "runc", "mount", "umount")
	dir := worldDir(t)
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRun(t, exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", state))
	t.Cleanup(func() { _ = exec.Command("umount", "-l", state).Run() })
	fill := filepath.Join(state, "fill") // the container's writable layer, on the same disk
	if err := os.Mkdir(fill, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := agentSocket(t, nil)
	e := envIn(t, dir, fmt.Sprintf("sealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", sock), nil)
	a := startAgent(t, e, sock)
	v := newVictim(t, e)
	// Tokens minted before the disk fills, verified after.
	const n = 300
	toks := in(t, e, "client", fmt.Sprintf("nsapi tokens server mqtt %d", n))
	if err := os.WriteFile(filepath.Join(v.server.b.rootfs, "toks"), []byte(toks+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	b := apiBundle(t, e, "mallory", "cat /dev/zero > /fill/junk 2>/dev/null; echo full")
	b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/fill", Type: "bind", Source: fill, Options: []string{"rbind", "rw"}})
	if r := b.runcRun(t); !strings.Contains(r.stdout, "full") {
		t.Fatalf("mallory did not fill the disk:\n%s", r)
	}
	// The last pages of the agent's files still take a few lines; then
	// nothing can be recorded, and nothing is answered valid.
	var valid, busy, other int
	fmt.Sscanf(v.server.sh(t, "nsapi verify-each client mqtt < /toks"), "valid=%d busy=%d other=%d", &valid, &busy, &other)
	t.Logf("%d tokens verified with the disk full: %d valid (recorded in what room was left), %d 503, %d else", n, valid, busy, other)
	if busy == 0 || other != 0 || valid+busy != n {
		t.Errorf("with the disk full: %d valid, %d 503, %d else; want 503 once nothing can be recorded, and nothing else", valid, busy, other)
	}
	if err := os.Remove(filepath.Join(fill, "junk")); err != nil {
		t.Fatal(err)
	}
	// Those answered valid were recorded: they are used up. A refused one
	// is either unused (its use could not be recorded: it verifies now) or
	// used up (recorded, but its audit line could not be written: fail
	// closed). None was answered valid without both records.
	var again, replayed int
	fmt.Sscanf(v.server.sh(t, "nsapi verify-each client mqtt < /toks"), "valid=%d busy=%d other=%d", &again, &other, &replayed)
	t.Logf("the same %d once there is room: %d valid, %d replayed", n, again, replayed)
	if again+replayed != n || replayed < valid || again == 0 {
		t.Errorf("once there is room: %d valid, %d replayed; want every one valid or replayed, the %d valid before among the replayed, and the unrecorded ones valid", again, replayed, valid)
	}
	// Full again while the agent writes, and stops; the next one starts.
	if r := b.runcRun(t); !strings.Contains(r.stdout, "full") {
		t.Fatalf("mallory did not fill the disk again:\n%s", r)
	}
	v.server.exec(t, "nsapi", "flood", "/v1/nothing", "2000")
	a.stop(t)
	if err := os.Remove(filepath.Join(fill, "junk")); err != nil {
		t.Fatal(err)
	}
	startAgent(t, e, sock)
	rtt := v.check(t)
	t.Logf("victim after the disk was full twice and the agent restarted: token valid once, round trips %s", rtt)
	if r := e.ctl(t, "audit", "verify"); r.err != nil {
		t.Errorf("audit verify after a full disk:\n%s", r)
	}
}

// TestAgentRestartWithAFullHistory: an agent restarted with the largest
// audit history its config allows (keep × max_bytes, 40 MB by default)
// and 1,000 registrations serves registrations within 2 s. Before, it
// verified the whole history (twice) before serving, and hooks timed out
// meanwhile.
func TestAgentRestartWithAFullHistory(t *testing.T) {
	requires(t, "runc", "sleep")
	e, sock := apiEnv(t)
	a := startAgent(t, e, sock)
	registerMany(t, sock, 1000)
	a.stop(t)
	// The history: as much as [audit] allows (default keep 4 × 8 MiB).
	fillAuditHistory(t, e)

	served, files := timeRestart(t, e, sock)
	t.Logf("agent restart with %d audit files and 1,000 registrations: a new container's API served %v after the agent started", files, served.Round(time.Millisecond))
	if served > 2*time.Second {
		t.Errorf("registrations served %v after the restart, want within 2 s", served)
	}
	if d := registeredDirs(t, sock, "c999"); len(d) != 1 {
		t.Errorf("the restarted agent does not serve the registrations it had: %v", d)
	}
}

// timeRestart starts e's agent and returns how long until a new
// container's API is served, and how many audit files it started with.
func timeRestart(t *testing.T, e *env, sock string) (time.Duration, int) {
	t.Helper()
	files, _ := audit.Files(filepath.Join(e.cfg.StateDir, audit.FileName))
	t0 := time.Now()
	a := launchAgent(t, exec.Command(bins.ctl, "agent", "--config", e.config), sock)
	waitSocket(t, sock, 10*time.Second, func() string { return "the agent did not start:\n" + a.out.String() })
	r := apiBundle(t, e, "client", "nsapi identity").runcRun(t)
	served := time.Since(t0)
	if r.err != nil || !strings.HasPrefix(strings.TrimSpace(r.stdout), "client ") {
		t.Fatalf("a container started right after the restart:\n%s\n%s", r, a.out)
	}
	return served, len(files)
}

// registerMany registers n containers, c0 to c<n-1>, all of one sleeping
// process (the agent keys them by id, pid and start time; ids differ).
func registerMany(t *testing.T, sock string, n int) {
	t.Helper()
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	ctx := context.Background()
	for i := range n {
		if _, err := control.RegisterProcess(ctx, sock, fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i), sleeper.Process.Pid, control.Request{API: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// fillAuditHistory appends to e's audit log (as the agent would, with its
// key) until it holds keep rotated files and a current one.
func fillAuditHistory(t *testing.T, e *env) {
	t.Helper()
	st := e.store(t)
	key, err := st.Key(context.Background(), registry.AuditKeyName, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer clear(key)
	path := filepath.Join(e.cfg.StateDir, audit.FileName)
	var want *audit.Head
	if rec, err := st.Current(); err == nil {
		want = rec.AuditHead
	}
	w, err := audit.Open(path, key, audit.Limits{MaxBytes: e.cfg.Audit.MaxBytes, Keep: e.cfg.Audit.Keep}, want)
	if err != nil {
		t.Fatal(err)
	}
	w.SyncEvery(time.Second)
	defer w.Close()
	f := map[string]string{"identity": "mallory", "count": "1", "statuses": "404:1", "path": "/v1/" + strings.Repeat("x", 200), "error": "unknown path"}
	for i := 0; ; i++ {
		if err := w.Append("refused", f); err != nil {
			t.Fatal(err)
		}
		if i%5000 == 0 {
			if files, _ := audit.Files(path); len(files) > e.cfg.Audit.Keep {
				return
			}
		}
	}
}

// TestReadOnlyStateDir: on an immutable OS image the state directory is
// read-only. Before, every start failed (the TPM lock lived there); now
// containers get the current secret, and rotate fails with one line
// naming the cause.
func TestReadOnlyStateDir(t *testing.T) {
	requires(t, "runc", "swtpm", "mount", "umount")
	tpm := newSWTPM(t, nil)
	e := newTPMEnv(t, tpm, "[]", nil)
	want := e.secretHex(t)
	state := e.cfg.StateDir
	mustRun(t, exec.Command("mount", "--bind", state, state))
	t.Cleanup(func() { _ = exec.Command("umount", "-l", state).Run() })
	mustRun(t, exec.Command("mount", "-o", "remount,bind,ro", state))
	if err := unix.Access(state, unix.W_OK); err == nil {
		t.Fatal("test premise: the state directory is still writable")
	}
	r := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	if r.err != nil || r.stdout != want {
		t.Errorf("a container with a read-only state directory:\n%s", r)
	}
	r = e.ctl(t, "rotate")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	t.Logf("rotate on a read-only state directory: %s", r.stderr)
	if r.err == nil || len(lines) != 1 || !strings.Contains(lines[0], "read-only file system") {
		t.Errorf("rotate with a read-only state directory: want one line naming it:\n%s", r)
	}
}
