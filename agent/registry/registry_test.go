// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/internal/testmounts"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/store"
	"golang.org/x/sys/unix"
)

// hostStore is an initialized store in dir/state with the host sealer.
func hostStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	st := store.New(filepath.Join(dir, "state"), seal.NewHost(filepath.Join(dir, "state", seal.HostKeyFile)))
	if _, _, err := st.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	// The containers' API filesystems stay mounted after Close, for the
	// next agent.
	t.Cleanup(func() { testmounts.UnmountUnder(dir) })
	return st
}

// TestChmodSocketRefusesSymlinks: the agent sets its socket's mode, and
// never that of whatever a symlink in the socket's place points to.
func TestChmodSocketRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := chmodSocket(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v, %v; want 0666", fi.Mode(), err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "planted.sock")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, victim} {
		if err := chmodSocket(p, 0o666); err == nil {
			t.Errorf("chmodSocket(%s) accepted a non-socket", filepath.Base(p))
		}
	}
	if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o600 {
		t.Errorf("the symlink's target became %v", fi.Mode().Perm())
	}
}

// options are Open's options for a test: the store in dir/state, the
// containers' directories in dir/containers.
func options(st *store.Store, dir string) Options {
	return Options{Store: st, Dir: filepath.Join(dir, "containers"), API: &APIOptions{TokenTTL: time.Minute,
		AuditPath: filepath.Join(dir, "state", audit.FileName), UsedTokens: filepath.Join(dir, "state", replay.FileName)}}
}

func gen1() uint64 { return 1 }

// call runs one request on identity's API of c, in process.
func call(t *testing.T, c *Containers, identity, path, body string) map[string]any {
	t.Helper()
	rec := httptest.NewRecorder()
	api.NewServer(identity, c, api.Limits{}).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", identity, path, rec.Code, rec.Body)
	}
	return v
}

// TestOpenChecksTheRecordedHead: an agent does not extend an audit log cut
// below the head recorded with the secret at the last rotation.
func TestOpenChecksTheRecordedHead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := options(st, dir)
	open := func() error {
		t.Helper()
		r, err := Open(ctx, opts, gen1)
		if err == nil {
			r.Close()
		}
		return err
	}
	for range 3 { // a line each
		if err := open(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Rotate(ctx); err != nil { // records the head: line 3
		t.Fatal(err)
	}
	data, err := os.ReadFile(opts.API.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	if err := os.WriteFile(opts.API.AuditPath, []byte(strings.Join(lines[:2], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	err = open()
	if !errors.Is(err, audit.ErrTruncated) || !strings.Contains(err.Error(), "northstarctl audit reset") {
		t.Fatalf("Open of a log cut below its recorded head = %v, want ErrTruncated naming the reset", err)
	}
}

// TestReplayAfterRestartAndReset: a token verified by one agent does not
// verify again after the agent restarts, even when the audit log, from
// which the agent used to relearn it, was pruned away or reset
// (DESIGN.md §11): the used tokens have a journal of their own.
func TestReplayAfterRestartAndReset(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := options(st, dir)
	r1, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	tok := call(t, r1, "client", "/v1/token", `{"audience":"server","app":"mqtt"}`)["token"].(string)
	unused := call(t, r1, "client", "/v1/token", `{"audience":"server","app":"mqtt"}`)["token"].(string)
	verify := func(r *Containers, tok string) map[string]any {
		return call(t, r, "server", "/v1/token/verify", fmt.Sprintf(`{"token":%q,"sender":"client","app":"mqtt"}`, tok))
	}
	if v := verify(r1, tok); v["valid"] != true {
		t.Fatalf("first verify: %v", v)
	}
	r1.Close()

	// The whole audit history gone (what pruning by a flood did).
	if _, err := st.ResetAudit(ctx); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if v := verify(r2, tok); v["reason"] != "replayed" {
		t.Errorf("a token verified before the restart and the reset, again after them: %v, want replayed", v)
	}
	if v := verify(r2, unused); v["valid"] != true {
		t.Errorf("a token not used before the restart: %v, want valid once", v)
	}
}

// sleeper is a process for a test registration.
func sleeper(t *testing.T) *os.Process {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process
}

// register registers id for process p, speaking as identity.
func register(t *testing.T, c *Containers, id, identity string, p *os.Process) (control.Registration, string, error) {
	t.Helper()
	r, pidfd := registrationOf(t, id, identity, p)
	defer pidfd.Close()
	reply, err := c.Register(control.Request{Registration: r, API: true}, pidfd)
	return r, reply.Dir, err
}

// registrationOf is the registration of id for process p as identity, and
// the pidfd the hook sends with it.
func registrationOf(t *testing.T, id, identity string, p *os.Process) (control.Registration, *os.File) {
	t.Helper()
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	start, err := procstat.StartTime(p.Pid)
	if err != nil {
		pidfd.Close()
		t.Fatal(err)
	}
	return control.Registration{ID: id, Identity: identity, Pid: p.Pid, Start: start}, pidfd
}

func identityAt(t *testing.T, dir string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "api.sock"))
	}}}
	rsp, err := c.Get("http://northstar/v1/identity")
	if err != nil {
		return "error: " + err.Error()
	}
	defer rsp.Body.Close()
	var v struct{ Identity string }
	json.NewDecoder(rsp.Body).Decode(&v)
	return v.Identity
}

// TestSameIDTwoContainers: two containers with one id (two runc roots,
// two containerd namespaces) get a directory and identity each; one's
// exit takes only its own; after a restart each answers as itself
// (DESIGN.md §11: keyed by id, the second took the first's directory, and
// after a restart the first answered as the second).
func TestSameIDTwoContainers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := options(st, dir)
	c, err := Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := sleeper(t), sleeper(t)
	_, dirA, err := register(t, c, "web", "alice", pa)
	if err != nil {
		t.Fatal(err)
	}
	_, dirB, err := register(t, c, "web", "bob", pb)
	if err != nil {
		t.Fatal(err)
	}
	if dirA == dirB {
		t.Fatal("two containers with one id share a directory")
	}
	if a, b := identityAt(t, dirA), identityAt(t, dirB); a != "alice" || b != "bob" {
		t.Fatalf("sockets answer %q and %q, want alice and bob", a, b)
	}
	c.Close()
	c, err = Open(ctx, opts, gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a, b := identityAt(t, dirA), identityAt(t, dirB); a != "alice" || b != "bob" {
		t.Fatalf("after a restart the sockets answer %q and %q, want alice and bob", a, b)
	}
	pb.Kill()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(dirB); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gone container's directory stays")
		}
	}
	if a := identityAt(t, dirA); a != "alice" {
		t.Errorf("the other container's exit took alice's socket: %q", a)
	}
}

// TestRegistrationNeedsItsProcess: the pidfd must be the process the
// registration names, started when the hook said.
func TestRegistrationNeedsItsProcess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := Open(ctx, options(hostStore(t, dir), dir), gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, other := sleeper(t), sleeper(t)
	start, _ := procstat.StartTime(p.Pid)
	fd, _ := unix.PidfdOpen(other.Pid, 0)
	otherfd := os.NewFile(uintptr(fd), "pidfd")
	defer otherfd.Close()
	if _, err := c.Register(control.Request{Registration: control.Registration{ID: "c1", Identity: "x", Pid: p.Pid, Start: start}, API: true}, otherfd); err == nil || !strings.Contains(err.Error(), "pidfd is process") {
		t.Errorf("another process's pidfd: %v", err)
	}
	fd, _ = unix.PidfdOpen(p.Pid, 0)
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	if _, err := c.Register(control.Request{Registration: control.Registration{ID: "c1", Identity: "x", Pid: p.Pid, Start: start + 1}, API: true}, pidfd); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("a start time that is not the process's: %v", err)
	}
	if _, err := c.Register(control.Request{Registration: control.Registration{ID: "c1", Identity: "x", Pid: p.Pid, Start: start}, API: true}, pidfd); err != nil {
		t.Errorf("the right pidfd and start: %v", err)
	}
}

// TestDirectoriesIgnoreTheUmask: a UMask=0077 unit made the directories
// 0700, which no container user but root could enter.
func TestDirectoriesIgnoreTheUmask(t *testing.T) {
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	ctx := context.Background()
	dir := t.TempDir()
	c, err := Open(ctx, options(hostStore(t, dir), dir), gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, d, err := register(t, c, "c1", "x", sleeper(t))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(d): 0o711, d: 0o755, filepath.Join(d, "api.sock"): 0o666} {
		if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %04o under umask 0077", path, fi.Mode().Perm(), err, want)
		}
	}
}

// TestSaveKeepsTheLatest: concurrent registrations and departures leave
// registry.json as the registrations are, never an older snapshot.
func TestSaveKeepsTheLatest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := Open(ctx, options(hostStore(t, dir), dir), gen1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := sleeper(t)
			if _, _, err := register(t, c, fmt.Sprintf("c%d", i), "x", p); err != nil {
				t.Error(err)
			}
			if i%2 == 0 {
				p.Kill()
			}
		}()
	}
	wg.Wait()
	// Once the departures are handled (each saves after it has removed
	// its registration), the file holds the 12 that run.
	inFile := func() (int, error) {
		s, err := readSaved(c.dir)
		if err != nil {
			return 0, err
		}
		return len(s.Containers), nil
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.mu.Lock()
		n := len(c.byKey)
		c.mu.Unlock()
		if f, err := inFile(); n == 12 && f == 12 && err == nil {
			break
		}
		if time.Now().After(deadline) {
			f, err := inFile()
			t.Fatalf("%d registrations, %d in registry.json (%v), want the 12 that run", n, f, err)
		}
	}
}

// FuzzRegistrationKey: the directory name is a function of the whole key
// and tells keys apart: equal keys, one name; a key that differs in id,
// pid or start, another name (barring a 64-bit hash collision).
func FuzzRegistrationKey(f *testing.F) {
	f.Add("web", 100, uint64(5000), "web", 100, uint64(5001))
	f.Add("a1", 12, uint64(3), "a", 112, uint64(3))
	f.Fuzz(func(t *testing.T, id1 string, pid1 int, st1 uint64, id2 string, pid2 int, st2 uint64) {
		a := control.Registration{ID: id1, Pid: pid1, Start: st1}
		b := control.Registration{ID: id2, Pid: pid2, Start: st2}
		na, nb := control.DirName(a), control.DirName(b)
		if len(na) != 16 || strings.Trim(na, "0123456789abcdef") != "" {
			t.Fatalf("DirName %q is not 16 hex characters", na)
		}
		if (a == b) != (na == nb) {
			t.Fatalf("keys %+v and %+v: names %s and %s", a, b, na, nb)
		}
	})
}
