package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent"
	"github.com/northstar-oci/northstar/broker/api"
	"github.com/northstar-oci/northstar/broker/audit"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/store"
)

// hostStore is an initialized store in dir/state with the host sealer.
func hostStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	st := store.New(filepath.Join(dir, "state"), seal.NewHost(filepath.Join(dir, "state", seal.HostKeyFile)))
	if _, _, err := st.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	return st
}

// runBroker runs the agent with the API in this process until the test
// (or stop) ends it.
func runBroker(t testing.TB, st *store.Store, sock, auditPath string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.Options{Socket: sock, Store: st, Unseal: agent.InProcess(st), Log: io.Discard,
			Broker: func(gen func() uint64) (agent.Broker, error) {
				return Open(ctx, Options{Store: st, TokenTTL: time.Minute, AuditPath: auditPath, Dir: filepath.Join(filepath.Dir(sock), "containers")}, gen)
			}})
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("agent did not listen: %v", <-done)
		}
	}
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func getIdentity(t *testing.T, sock string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	rsp, err := c.Get("http://northstar/v1/identity")
	if err != nil {
		return "", err
	}
	defer rsp.Body.Close()
	data, _ := io.ReadAll(rsp.Body)
	var v struct{ Identity string }
	if err := json.Unmarshal(data, &v); err != nil {
		return "", err
	}
	return v.Identity, nil
}

func sleeper(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestBrokerRegistrations: a registered container gets a socket that
// answers as its identity; the socket goes when the container's process
// does; a restarted broker serves the running containers again; the audit
// log verifies.
func TestBrokerRegistrations(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	sock := filepath.Join(dir, "agent", "agent.sock")
	auditPath := filepath.Join(dir, "audit.log")
	stop := runBroker(t, st, sock, auditPath)

	if _, err := agent.Register(ctx, sock, agent.Registration{ID: "../x", Identity: "client", Pid: os.Getpid()}); err == nil || !strings.Contains(err.Error(), "container id") {
		t.Errorf("a path as container id: %v", err)
	}
	if _, err := agent.Register(ctx, sock, agent.Registration{ID: "c1", Identity: "bad identity", Pid: os.Getpid()}); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("a bad identity: %v", err)
	}
	a, b := sleeper(t), sleeper(t)
	dirA, err := agent.Register(ctx, sock, agent.Registration{ID: "ctr-a", Identity: "client", Pid: a.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	dirB, err := agent.Register(ctx, sock, agent.Registration{ID: "ctr-b", Identity: "broker", Pid: b.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := getIdentity(t, filepath.Join(dirA, "api.sock")); err != nil || id != "client" {
		t.Fatalf("container a's socket answers %q, %v", id, err)
	}
	if id, _ := getIdentity(t, filepath.Join(dirB, "api.sock")); id != "broker" {
		t.Fatalf("container b's socket answers %q", id)
	}

	// The broker restarts: b's socket comes back in the same directory.
	stop()
	if _, err := getIdentity(t, filepath.Join(dirB, "api.sock")); err == nil {
		t.Fatal("the socket answers while no broker runs")
	}
	runBroker(t, st, sock, auditPath)
	if id, err := getIdentity(t, filepath.Join(dirB, "api.sock")); err != nil || id != "broker" {
		t.Fatalf("after a broker restart b's socket answers %q, %v", id, err)
	}

	// a's process ends: its socket and directory go.
	a.Process.Kill()
	a.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(dirA); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the socket directory of a gone container stays")
		}
	}

	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, _ := os.ReadFile(auditPath)
	for _, want := range []string{"container-registered", "container-gone", "lifecycle-started"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	// The key is the store's; Verify with it.
	key, err := st.Key(ctx, AuditKeyName, 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(f, key, nil); err != nil {
		t.Errorf("audit log: %v", err)
	}
}

// TestChmodSocketRefusesSymlinks: the broker sets its socket's mode, and
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

// TestOpenChecksTheRecordedHead: a broker does not extend an audit log cut
// below the head recorded with the secret at the last rotation.
func TestOpenChecksTheRecordedHead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := Options{Store: st, TokenTTL: time.Minute, AuditPath: filepath.Join(dir, "state", audit.FileName), Dir: filepath.Join(dir, "containers")}
	gen := func() uint64 { return 1 }
	open := func() error {
		t.Helper()
		r, err := Open(ctx, opts, gen)
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
	data, err := os.ReadFile(opts.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	if err := os.WriteFile(opts.AuditPath, []byte(strings.Join(lines[:2], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	err = open()
	if !errors.Is(err, audit.ErrTruncated) || !strings.Contains(err.Error(), "northstarctl audit reset") {
		t.Fatalf("Open of a log cut below its recorded head = %v, want ErrTruncated naming the reset", err)
	}
}

// TestValidContainerIDMatchesTheRule: the loop judges every byte value,
// first and later, and the length bounds, as the rule's expression does.
func TestValidContainerIDMatchesTheRule(t *testing.T) {
	rule := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	for c := 0; c < 256; c++ {
		b := string([]byte{byte(c)})
		for _, s := range []string{b, "a" + b, b + "a", strings.Repeat("a", 127) + b, strings.Repeat("a", 128) + b} {
			if got, want := validContainerID(s), rule.MatchString(s); got != want {
				t.Fatalf("validContainerID(%d bytes around %#x) = %v, the rule says %v", len(s), c, got, want)
			}
		}
	}
	if validContainerID("") {
		t.Error("the empty id passed")
	}
}

// TestReplayAfterRestart: a token verified by one broker does not verify
// again after the broker restarts: the replay cache is memory, and the new
// broker reads the used tokens back from the audit log.
func TestReplayAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := Options{Store: st, TokenTTL: time.Minute, AuditPath: filepath.Join(dir, "state", audit.FileName), Dir: filepath.Join(dir, "containers")}
	gen := func() uint64 { return 1 }
	call := func(r *Registry, identity, path, body string) map[string]any {
		t.Helper()
		rec := httptest.NewRecorder()
		api.Handler(identity, r).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", identity, path, rec.Code, rec.Body)
		}
		return v
	}
	r1, err := Open(ctx, opts, gen)
	if err != nil {
		t.Fatal(err)
	}
	tok := call(r1, "client", "/v1/token", `{"audience":"broker","app":"mqtt"}`)["token"].(string)
	unused := call(r1, "client", "/v1/token", `{"audience":"broker","app":"mqtt"}`)["token"].(string)
	verify := func(r *Registry, tok string) map[string]any {
		return call(r, "broker", "/v1/token/verify", fmt.Sprintf(`{"token":%q,"sender":"client","app":"mqtt"}`, tok))
	}
	if v := verify(r1, tok); v["valid"] != true {
		t.Fatalf("first verify: %v", v)
	}
	r1.Close()

	r2, err := Open(ctx, opts, gen)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if v := verify(r2, tok); v["reason"] != "replayed" {
		t.Errorf("a token verified before the restart, again after it: %v, want replayed", v)
	}
	if v := verify(r2, unused); v["valid"] != true {
		t.Errorf("a token not used before the restart: %v, want valid once", v)
	}
}
