package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
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
	"github.com/northstar-oci/northstar/agent/token"
)

// testAgent is an Agent for one generation whose audit trail is kept.
type testAgent struct {
	root *keys.Root
	gen  uint64
	v    *token.Verifier

	mu    sync.Mutex
	audit []string
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
	}}
	return b
}

func (b *testAgent) Current() (*keys.Root, uint64) { return b.root, b.gen }
func (b *testAgent) Verifier() *token.Verifier     { return b.v }
func (b *testAgent) DefaultTTL() time.Duration     { return time.Minute }
func (b *testAgent) Audit(e string, f map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, _ := json.Marshal(f)
	b.audit = append(b.audit, e+" "+string(data))
}

// client is an HTTP client of one container's socket.
type client struct {
	t *testing.T
	c *http.Client
}

// serve starts the API of identity on a socket of its own.
func serve(t *testing.T, b *testAgent, identity string) *client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(identity, b), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &client{t: t, c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
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
	cl := serve(t, b, "client")
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
	if n := len(b.audit); n < 13 {
		t.Errorf("%d refusals audited, want every one", n)
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
