// SPDX-License-Identifier: Apache-2.0

package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/agent/token"
)

// testAgent is an Agent for one generation (7, after 6) whose audit
// trail is kept; with failAudit set, every audit line fails.
type testAgent struct {
	root *keys.Root
	gen  uint64
	v    *token.Verifier

	mu        sync.Mutex
	audit     []string
	failAudit bool
}

func newTestAgent(t *testing.T) *testAgent {
	t.Helper()
	root, err := keys.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := &testAgent{root: root, gen: 7}
	b.v = &token.Verifier{Key: func(g uint64) []byte {
		if g == b.gen {
			return root.TokenKey(g)
		}
		return nil
	}, Memory: replay.New(replay.Limits{})}
	return b
}

func (b *testAgent) Current() (*keys.Root, uint64, uint64) { return b.root, b.gen, b.gen - 1 }
func (b *testAgent) Verifier() *token.Verifier             { return b.v }
func (b *testAgent) DefaultTTL() time.Duration             { return time.Minute }
func (b *testAgent) Audit(e string, f map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failAudit {
		return errors.New("no space left on device")
	}
	data, _ := json.Marshal(f)
	b.audit = append(b.audit, e+" "+string(data))
	return nil
}

func (b *testAgent) lines(event string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range b.audit {
		if strings.HasPrefix(l, event+" ") {
			out = append(out, l)
		}
	}
	return out
}

// client is an HTTP client of one container's socket.
type client struct {
	t *testing.T
	c *http.Client
}

// serve starts the API of identity on a socket of its own.
func serve(t *testing.T, b *testAgent, identity string) *client {
	t.Helper()
	c, _ := serveWith(t, b, identity, Limits{})
	return c
}

// serveWith is serve under lim; it also returns the socket and server.
func serveWith(t *testing.T, b *testAgent, identity string, lim Limits) (*client, *socket) {
	t.Helper()
	return serveOn(t, NewServer(identity, b, lim), filepath.Join(t.TempDir(), "api.sock"))
}

// serveOn serves srv on a socket at sock.
func serveOn(t *testing.T, srv *Server, sock string) (*client, *socket) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &client{t: t, c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}, &socket{path: sock, srv: srv}
}

type socket struct {
	path string
	srv  *Server
}

func (c *client) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest(method, "http://northstar"+path, strings.NewReader(body))
	rsp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer rsp.Body.Close()
	data, _ := io.ReadAll(rsp.Body)
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		c.t.Fatalf("%s %s: response is not a JSON object: %q", method, path, data)
	}
	return rsp.StatusCode, v
}

func (c *client) ok(method, path, body string) map[string]any {
	c.t.Helper()
	code, v := c.do(method, path, body)
	if code != http.StatusOK {
		c.t.Fatalf("%s %s %s: %d %v", method, path, body, code, v)
	}
	return v
}

func keysOf(v map[string]any) []string { return slices.Sorted(maps.Keys(v)) }

func TestIdentityAndTokens(t *testing.T) {
	b := newTestAgent(t)
	cl, br, mal := serve(t, b, "client"), serve(t, b, "server"), serve(t, b, "mallory")

	if v := cl.ok("GET", "/v1/identity", ""); v["identity"] != "client" || v["generation"] != float64(7) {
		t.Errorf("identity %v", v)
	}
	tok := cl.ok("POST", "/v1/token", `{"audience":"server","app":"mqtt","ttl_seconds":60}`)["token"].(string)
	verify := func(c *client, sender, app string) map[string]any {
		return c.ok("POST", "/v1/token/verify", fmt.Sprintf(`{"token":%q,"sender":%q,"app":%q}`, tok, sender, app))
	}
	if v := verify(mal, "client", "mqtt"); v["valid"] != false || v["reason"] != "wrong-audience" || !slices.Equal(keysOf(v), []string{"reason", "valid"}) {
		t.Errorf("another container verified the server's token: %v", v)
	}
	if v := verify(br, "client", "http"); v["reason"] != "wrong-app" {
		t.Errorf("wrong app: %v", v)
	}
	// DESIGN.md §9: exactly these members.
	if v := verify(br, "client", "mqtt"); v["valid"] != true || v["sender"] != "client" || !slices.Equal(keysOf(v), []string{"app", "expires_at", "sender", "valid"}) {
		t.Errorf("valid token: %v", v)
	}
	if v := verify(br, "client", "mqtt"); v["reason"] != "replayed" {
		t.Errorf("second use: %v", v)
	}
	// Mallory's token never passes as client's: the sender is the socket.
	tok = mal.ok("POST", "/v1/token", `{"audience":"server","app":"mqtt"}`)["token"].(string)
	if v := verify(br, "client", "mqtt"); v["reason"] != "wrong-sender" {
		t.Errorf("mallory's token claimed as client's: %v", v)
	}
	for _, line := range b.audit {
		if strings.Contains(line, tok[:20]) {
			t.Errorf("the audit trail holds a token: %s", line)
		}
	}
}

func TestSignaturesKeysAndDerive(t *testing.T) {
	b := newTestAgent(t)
	cl, br, mal := serve(t, b, "client"), serve(t, b, "server"), serve(t, b, "mallory")
	data := base64.StdEncoding.EncodeToString([]byte("hello"))
	sig := cl.ok("POST", "/v1/sign", fmt.Sprintf(`{"data":%q}`, data))["signature"].(string)
	check := func(sender string) any {
		return br.ok("POST", "/v1/signature/verify", fmt.Sprintf(`{"sender":%q,"data":%q,"signature":%q}`, sender, data, sig))["valid"]
	}
	if check("client") != true || check("mallory") != false {
		t.Error("signatures verify only under the signer's identity")
	}
	k := mal.ok("GET", "/v1/keys/client", "")
	if k["identity"] != "client" || k["ed25519"] == "" || k["x25519"] == "" {
		t.Errorf("keys %v", k)
	}
	ab := cl.ok("POST", "/v1/derive", `{"peer":"server","app":"mqtt"}`)["key"]
	ba := br.ok("POST", "/v1/derive", `{"peer":"client","app":"mqtt"}`)["key"]
	other := mal.ok("POST", "/v1/derive", `{"peer":"server","app":"mqtt"}`)["key"]
	if ab != ba || len(ab.(string)) != 64 || ab == other {
		t.Errorf("derive: A->B %v, B->A %v, M->B %v", ab, ba, other)
	}
}

func TestBadInput(t *testing.T) {
	b := newTestAgent(t)
	cl, sock := serveWith(t, b, "client", Limits{})
	srv := sock.srv
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/token", `{`, 400},
		{"POST", "/v1/token", `{"audience":"server","app":"mqtt","extra":1}`, 400},
		{"POST", "/v1/token", `{"audience":"server","app":"mqtt"} {}`, 400},
		{"POST", "/v1/token", `{"audience":"` + strings.Repeat("a", 254) + `","app":"mqtt"}`, 400},
		{"POST", "/v1/token", `{"audience":"bro ker","app":"mqtt"}`, 400},
		{"POST", "/v1/token", `{"audience":"server","app":"mqtt","ttl_seconds":3601}`, 400},
		{"POST", "/v1/token", `{"audience":"server","app":"mqtt","pad":"` + strings.Repeat("x", MaxBody) + `"}`, 413},
		{"GET", "/v1/token", ``, 405},
		{"POST", "/v1/identity", `{}`, 405},
		{"GET", "/v2/identity", ``, 404},
		{"GET", "/v1/keys/bad%20name", ``, 404},
		{"POST", "/v1/sign", `{"data":"not base64!"}`, 400},
		{"POST", "/v1/derive", `{"peer":"client","app":"mqtt"}`, 400},
		{"POST", "/v1/token/verify", `{"token":"x","sender":"bro ker","app":"mqtt"}`, 400},
		{"POST", "/v1/token/verify", `{"token":"x","sender":"client","app":"` + strings.Repeat("a", 65) + `"}`, 400},
	} {
		code, v := cl.do(c.method, c.path, c.body)
		if code != c.want || v["error"] == nil || v["error"] == "" {
			t.Errorf("%s %s %.40q: %d %v, want %d with an error", c.method, c.path, c.body, code, v, c.want)
		}
	}
	// Counted, not audited one by one: one line per flush.
	b.mu.Lock()
	n := len(b.audit)
	b.mu.Unlock()
	if n != 0 {
		t.Errorf("%d audit lines for refusals before the flush, want none", n)
	}
	srv.FlushRefusals()
	lines := b.lines("refused")
	if len(lines) != 1 || !strings.Contains(lines[0], `"count":"15"`) || !strings.Contains(lines[0], `"statuses":"400:10 404:2 405:2 413:1"`) {
		t.Errorf("refusals audited as %q, want one line counting 15 by status", lines)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"audience":"server","app":"mqtt","ttl_seconds":60}`))
	f.Add([]byte(`{"token":"x","sender":"client","app":"mqtt"}`))
	f.Add([]byte(`{"data":"aGVsbG8="}`))
	f.Add([]byte(`{"sender":"a","data":"","signature":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Never a panic, and what decodes re-encodes to JSON that decodes
		// to the same value.
		for _, decode := range []func([]byte) (any, error){
			func(d []byte) (any, error) { return DecodeRequest[TokenRequest](d) },
			func(d []byte) (any, error) { return DecodeRequest[VerifyRequest](d) },
			func(d []byte) (any, error) { return DecodeRequest[SignRequest](d) },
			func(d []byte) (any, error) { return DecodeRequest[SignatureRequest](d) },
			func(d []byte) (any, error) { return DecodeRequest[DeriveRequest](d) },
		} {
			v, err := decode(data)
			if err != nil {
				continue
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(out, []byte("{")) {
				t.Fatalf("re-encoded %q", out)
			}
		}
	})
}

// TestRateLimit: a socket over its rate gets 429 with Retry-After and its
// refusals counted; another socket is not slowed at all.
func TestRateLimit(t *testing.T) {
	b := newTestAgent(t)
	mal, msock := serveWith(t, b, "mallory", Limits{Rate: 1, Burst: 5})
	cl := serve(t, b, "client")
	for i := range 5 {
		if code, v := mal.do("GET", "/v1/identity", ""); code != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %v", i+1, code, v)
		}
	}
	req, _ := http.NewRequest("GET", "http://northstar/v1/identity", nil)
	t0 := time.Now()
	rsp, err := mal.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	// Held before the answer: a flood waits on its own connections.
	if d := time.Since(t0); d < maxTarpit*3/4 {
		t.Errorf("a request over the rate was refused after %v, want it held about %v", d, maxTarpit)
	}
	if rsp.StatusCode != http.StatusTooManyRequests || rsp.Header.Get("Retry-After") != "1" {
		t.Errorf("over the rate: %d Retry-After %q, want 429 with Retry-After 1", rsp.StatusCode, rsp.Header.Get("Retry-After"))
	}
	for range 50 {
		cl.ok("GET", "/v1/identity", "")
	}
	msock.srv.FlushRefusals()
	if l := b.lines("refused"); len(l) != 1 || !strings.Contains(l[0], `"statuses":"429:1"`) || !strings.Contains(l[0], `"identity":"mallory"`) {
		t.Errorf("refusals %q, want mallory's 429 counted", l)
	}
}

// TestUnrecordedFailsClosed: what the audit log cannot record is not
// answered: no token is issued, and a verification is 503, never valid.
func TestUnrecordedFailsClosed(t *testing.T) {
	b := newTestAgent(t)
	cl, srv := serve(t, b, "client"), serve(t, b, "server")
	tok := cl.ok("POST", "/v1/token", `{"audience":"server","app":"mqtt"}`)["token"].(string)
	b.mu.Lock()
	b.failAudit = true
	b.mu.Unlock()
	if code, v := cl.do("POST", "/v1/token", `{"audience":"server","app":"mqtt"}`); code != http.StatusServiceUnavailable || v["token"] != nil {
		t.Errorf("a token issued while the audit log fails: %d %v", code, v)
	}
	verify := fmt.Sprintf(`{"token":%q,"sender":"client","app":"mqtt"}`, tok)
	if code, v := srv.do("POST", "/v1/token/verify", verify); code != http.StatusServiceUnavailable || v["valid"] != nil {
		t.Errorf("a verification while the audit log fails: %d %v, want 503", code, v)
	}
	if code, _ := cl.do("POST", "/v1/sign", `{"data":"aGk="}`); code != http.StatusServiceUnavailable {
		t.Errorf("a signature while the audit log fails: %d, want 503", code)
	}
	b.mu.Lock()
	b.failAudit = false
	b.mu.Unlock()
	// Its use was recorded before the log failed: it stays used.
	if v := srv.ok("POST", "/v1/token/verify", verify); v["valid"] != false || v["reason"] != "replayed" {
		t.Errorf("the token after the failed verification: %v, want replayed (fail closed)", v)
	}
}

// TestSignaturesCarryAppAndGeneration: a signature passes only for the
// app and generation it was made for, and only while its generation is
// the current or the previous one.
func TestSignaturesCarryAppAndGeneration(t *testing.T) {
	b := newTestAgent(t)
	cl, srv := serve(t, b, "client"), serve(t, b, "server")
	data := base64.StdEncoding.EncodeToString([]byte("hello"))
	sig := cl.ok("POST", "/v1/sign", fmt.Sprintf(`{"data":%q,"app":"mqtt"}`, data))
	if sig["app"] != "mqtt" || sig["generation"] != float64(7) {
		t.Fatalf("sign answer %v", sig)
	}
	check := func(app string, gen uint64) any {
		return srv.ok("POST", "/v1/signature/verify", fmt.Sprintf(`{"sender":"client","data":%q,"signature":%q,"app":%q,"generation":%d}`, data, sig["signature"], app, gen))["valid"]
	}
	if check("mqtt", 7) != true {
		t.Fatal("the signature does not verify for its own app and generation")
	}
	if check("http", 7) != false || check("", 7) != false {
		t.Error("a signature made for mqtt passes for another app")
	}
	if check("mqtt", 6) != false {
		t.Error("a signature passes for another generation")
	}
	b.gen = 8 // a rotation: 7 is the previous generation
	if check("mqtt", 7) != true {
		t.Error("a signature of the previous generation no longer verifies")
	}
	b.gen = 9
	if check("mqtt", 7) != false {
		t.Error("a signature two rotations old still verifies")
	}
	// The signed message is documented: a holder of the public key checks it.
	b.gen = 7
	pub7, _ := base64.StdEncoding.DecodeString(srv.ok("GET", "/v1/keys/client", "")["ed25519"].(string))
	raw, _ := base64.StdEncoding.DecodeString(sig["signature"].(string))
	if !ed25519.Verify(pub7, SignedMessage("mqtt", 7, []byte("hello")), raw) {
		t.Error("the signature is not over SignedMessage(app, generation, data)")
	}
}

// TestConnectionCap: a container holding its socket's every connection,
// stalled mid-request, waits for itself alone; the others are served, and
// its stalled requests are dropped after the timeout.
func TestConnectionCap(t *testing.T) {
	b := newTestAgent(t)
	mal, msock := serveWith(t, b, "mallory", Limits{Conns: 3, Timeout: 500 * time.Millisecond})
	cl := serve(t, b, "client")
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("unix", msock.path)
		if err != nil {
			t.Fatal(err)
		}
		// Headers and the start of a 64 KiB body, then nothing.
		fmt.Fprintf(c, "POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{\"audience\":")
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	mal.c.Timeout = 200 * time.Millisecond
	if _, err := mal.c.Get("http://northstar/v1/identity"); err == nil {
		t.Error("a fourth connection was served beside three held ones")
	}
	for range 20 {
		cl.ok("GET", "/v1/identity", "")
	}
	// The stalled requests are dropped: the server closes their
	// connections once the timeout has passed.
	for i, c := range held {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("held connection %d: %v, want it closed by the server within the timeout", i, err)
		}
		c.Close()
	}
	mal.c.Timeout = 2 * time.Second
	if code, _ := mal.do("GET", "/v1/identity", ""); code != http.StatusOK {
		t.Errorf("after the stalled connections were dropped: %d", code)
	}
}
