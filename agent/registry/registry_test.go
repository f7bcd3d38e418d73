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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/audit"
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

// TestOpenChecksTheRecordedHead: an agent does not extend an audit log cut
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

// TestReplayAfterRestart: a token verified by one agent does not verify
// again after the agent restarts: the replay cache is memory, and the new
// agent reads the used tokens back from the audit log.
func TestReplayAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := hostStore(t, dir)
	opts := Options{Store: st, TokenTTL: time.Minute, AuditPath: filepath.Join(dir, "state", audit.FileName), Dir: filepath.Join(dir, "containers")}
	gen := func() uint64 { return 1 }
	call := func(r *Containers, identity, path, body string) map[string]any {
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
	tok := call(r1, "client", "/v1/token", `{"audience":"server","app":"mqtt"}`)["token"].(string)
	unused := call(r1, "client", "/v1/token", `{"audience":"server","app":"mqtt"}`)["token"].(string)
	verify := func(r *Containers, tok string) map[string]any {
		return call(r, "server", "/v1/token/verify", fmt.Sprintf(`{"token":%q,"sender":"client","app":"mqtt"}`, tok))
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
