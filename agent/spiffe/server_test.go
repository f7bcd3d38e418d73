// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// nsspiffe builds the integration tests' in-container helper (go-spiffe
// alone) once: the other process of TestSpiffeTLSBetweenProcesses.
var nsspiffe = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ns-nsspiffe-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "nsspiffe")
	cmd := exec.Command("go", "build", "-o", out, "./integration/nsspiffe")
	cmd.Dir = "../.."
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./integration/nsspiffe: %v\n%s", err, msg)
	}
	return out, nil
})

// recorder is the audit log of a test server; with full set it fails
// every append, as a log on a full disk does.
type recorder struct {
	mu    sync.Mutex
	lines []entry
	full  atomic.Bool
}

type entry struct {
	event  string
	fields map[string]string
}

func (r *recorder) Audit(event string, fields map[string]string) error {
	if r.full.Load() {
		return errors.New("write audit.log: no space left on device")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, entry{event, fields})
	return nil
}

func (r *recorder) all() []entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// await returns the first line of event for which match holds, waiting up
// to 2 s (a stream's line is written after its message is sent).
func (r *recorder) await(t *testing.T, event string, match func(map[string]string) bool) map[string]string {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, e := range r.all() {
			if e.event == event && match(e.fields) {
				return e.fields
			}
		}
	}
	t.Fatalf("no %s audit line; the log: %v", event, r.all())
	return nil
}

type limiter struct {
	deny  atomic.Bool
	after time.Duration
}

func (l *limiter) Take(context.Context) (bool, time.Duration) { return !l.deny.Load(), l.after }

type refusals struct {
	mu  sync.Mutex
	why []string // "status method message"
}

func (r *refusals) add(method string, status int, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.why = append(r.why, fmt.Sprintf("%d %s %s", status, method, reason))
}

// has reports whether a refusal's "status method message" contains all of
// parts.
func (r *refusals) has(parts ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.why {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(w, p)
		}
		if all {
			return true
		}
	}
	return false
}

// testServer is one container's Workload API on a socket of its own.
type testServer struct {
	*Server
	sock    string
	audit   *recorder
	limit   *limiter
	refused *refusals
	gens    *Generations
	served  chan error
}

// serve starts the server of identity on a temporary unix socket, with
// ca (one per test unless shared) and the config mod changes.
func serve(t *testing.T, ca *CA, ident string, mod func(*Config)) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "ns-spiffe-") // short: a socket path has 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testServer{sock: filepath.Join(dir, "spiffe.sock"), audit: &recorder{}, limit: &limiter{}, refused: &refusals{},
		gens: NewGenerations(7), served: make(chan error, 1)}
	cfg := Config{CA: ca, Lifecycle: ts.gens, Audit: ts.audit, Limiter: ts.limit, Refused: ts.refused.add,
		X509TTL: time.Hour, JWTTTL: 5 * time.Minute}
	if mod != nil {
		mod(&cfg)
	}
	ts.Server, err = NewServer(ident, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.served <- ts.Serve(ln) }()
	t.Cleanup(ts.Close)
	return ts
}

func (ts *testServer) addr() string { return "unix://" + ts.sock }

// client is a raw gRPC client of the socket: the generated stub, no
// go-spiffe logic, so that tests choose the metadata they send.
func (ts *testServer) client(t *testing.T) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// header is the context of a call with the security header.
func header(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestGoSPIFFEClients: go-spiffe's own sources, unchanged, against the
// server: the X.509-SVID of the socket's identity and its bundle, a
// JWT-SVID for the audience asked that validates against the JWT bundle
// and through ValidateJWTSVID, and an audit line for each, naming
// neither the key nor the token.
func TestGoSPIFFEClients(t *testing.T) {
	ts := serve(t, newCA(t, 1), "default/mqtt-0/broker", nil)
	ctx := timeout(t)
	opts := workloadapi.WithClientOptions(workloadapi.WithAddr(ts.addr()))

	x509s, err := workloadapi.NewX509Source(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer x509s.Close()
	svid, err := x509s.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != brokerI || ts.ID() != brokerI {
		t.Fatalf("X509Source holds %s, want %s", svid.ID, brokerI)
	}
	checkX509SVID(t, svid.Certificates[0], brokerI, time.Hour)
	if len(svid.Certificates) != 1 {
		t.Errorf("chain of %d certificates, want the leaf alone", len(svid.Certificates))
	}
	b, err := x509s.GetX509BundleForTrustDomain(td)
	if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(ts.cfg.CA.Certificate()) {
		t.Fatalf("X.509 bundle %v, %v", b, err)
	}
	x509Line := ts.audit.await(t, "spiffe-x509-issued", func(f map[string]string) bool { return true })
	leaf := svid.Certificates[0]
	if x509Line["spiffe_id"] != brokerI.String() || x509Line["identity"] != "default/mqtt-0/broker" ||
		x509Line["serial"] != hex.EncodeToString(leaf.SerialNumber.Bytes()) || x509Line["generation"] != "7" {
		t.Errorf("x509 audit line %v", x509Line)
	}

	jwts, err := workloadapi.NewJWTSource(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer jwts.Close()
	j, err := jwts.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "mqtt", ExtraAudiences: []string{"spiffe://example.org/client"}})
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != brokerI || !slices.Equal(j.Audience, []string{"mqtt", "spiffe://example.org/client"}) {
		t.Errorf("JWT-SVID of %s for %v", j.ID, j.Audience)
	}
	if d := time.Until(j.Expiry); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("JWT-SVID expires in %s, want 5 min", d)
	}
	// Offline, with the JWT bundle the source streamed.
	if got, err := jwtsvid.ParseAndValidate(j.Marshal(), jwts, []string{"mqtt"}); err != nil || got.ID != brokerI {
		t.Errorf("validated against the JWT bundle: %v, %v", got, err)
	}
	// Online, by the agent for the caller.
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(ts.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, err := c.ValidateJWTSVID(ctx, j.Marshal(), "spiffe://example.org/client")
	if err != nil || v.ID != brokerI || v.Claims["sub"] != brokerI.String() {
		t.Fatalf("ValidateJWTSVID: %v, %v", v, err)
	}
	if aud, _ := v.Claims["aud"].([]any); len(aud) != 2 {
		t.Errorf("validated claims aud %v, want the list", v.Claims["aud"])
	}
	if _, err := c.ValidateJWTSVID(ctx, j.Marshal(), "http"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID for another audience: %v, want InvalidArgument", err)
	}
	jwtLine := ts.audit.await(t, "spiffe-jwt-issued", func(f map[string]string) bool { return true })
	if jwtLine["audience"] != "mqtt spiffe://example.org/client" || jwtLine["jwt_id"] == "" || jwtLine["jwt_id"] != v.Claims["jti"] {
		t.Errorf("jwt audit line %v", jwtLine)
	}
	ts.audit.await(t, "spiffe-jwt-validated", func(f map[string]string) bool {
		return f["result"] == "valid" && f["spiffe_id"] == brokerI.String() && f["validator"] == "default/mqtt-0/broker"
	})
	// An invalid validation is a refusal, counted, not a line of its own.
	if !ts.refused.has("400", "ValidateJWTSVID") {
		t.Error("the invalid validation is not counted as a refusal")
	}
	for _, e := range ts.audit.all() {
		if e.event == "spiffe-jwt-validated" && e.fields["result"] != "valid" {
			t.Errorf("an invalid validation has an audit line of its own: %v", e.fields)
		}
	}

	// Never a key or a token in the audit log.
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	forms := [][]byte{key, []byte(base64.StdEncoding.EncodeToString(key)), []byte(hex.EncodeToString(key)), []byte(j.Marshal()),
		[]byte(strings.Split(j.Marshal(), ".")[2])}
	for _, e := range ts.audit.all() {
		for k, v := range e.fields {
			for _, f := range forms {
				if bytes.Contains([]byte(v), f) || bytes.Contains(f, []byte(v)) && len(v) > 16 {
					t.Errorf("audit line %s field %s holds a key or a token", e.event, k)
				}
			}
		}
	}
}

// TestEachSocketItsOwnIdentity: two servers of one CA, two identities;
// each socket's SVIDs name its own identity and no other can be asked for.
func TestEachSocketItsOwnIdentity(t *testing.T) {
	ca := newCA(t, 1)
	a, b := serve(t, ca, "client", nil), serve(t, ca, "mallory", nil)
	ctx := timeout(t)
	for _, c := range []struct {
		ts   *testServer
		want string
	}{{a, "spiffe://example.org/client"}, {b, "spiffe://example.org/mallory"}} {
		s, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(c.ts.addr()))
		if err != nil || s.ID.String() != c.want {
			t.Errorf("%s: X.509-SVID %v, %v; want %s", c.ts.sock, s, err, c.want)
		}
		j, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x"}, workloadapi.WithAddr(c.ts.addr()))
		if err != nil || j.ID.String() != c.want {
			t.Errorf("%s: JWT-SVID %v, %v; want %s", c.ts.sock, j, err, c.want)
		}
	}
	// mallory asks its socket for client's JWT-SVID.
	_, err := b.client(t).FetchJWTSVID(header(ctx), &workload.JWTSVIDRequest{Audience: []string{"x"}, SpiffeId: "spiffe://example.org/client"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("another identity's JWT-SVID: %v, want PermissionDenied", err)
	}
}

// TestSpiffeTLSBetweenProcesses: go-spiffe's spiffetls, unchanged, in two
// processes: a server (integration/nsspiffe) whose SVID comes from the
// "server" socket and which authorizes only spiffe://example.org/client,
// and this process dialing with the SVID of the "client" socket; then
// mallory, whose SVID is just as valid, is refused, and a client that
// expects another server ID refuses the real one.
func TestSpiffeTLSBetweenProcesses(t *testing.T) {
	bin, err := nsspiffe()
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, 1)
	server, client, mallory := serve(t, ca, "server", nil), serve(t, ca, "client", nil), serve(t, ca, "mallory", nil)
	cmd := exec.Command(bin, "tls-server", "127.0.0.1:0", "spiffe://example.org/client")
	cmd.Env = append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET="+server.addr())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	addr, ok := "", lines.Scan()
	if ok {
		addr, ok = strings.CutPrefix(lines.Text(), "listening on ")
	}
	if !ok {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the tls server printed no address: %s", stderr.String())
	}
	ctx := timeout(t)
	serverID := spiffeid.RequireFromString("spiffe://example.org/server")

	dial := func(from *testServer, authorize spiffeid.ID) (string, error) {
		conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSourceOptions(tlsconfig.AuthorizeID(authorize),
			workloadapi.WithClientOptions(workloadapi.WithAddr(from.addr()))))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "hello\n"); err != nil {
			return "", err
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(reply), err
	}
	if reply, err := dial(client, serverID); err != nil || reply != "hello spiffe://example.org/client" {
		t.Fatalf("client: %q, %v (server: %s)", reply, err, stderr.String())
	}
	if reply, err := dial(mallory, serverID); err == nil {
		t.Errorf("mallory got through: %q", reply)
	}
	if reply, err := dial(client, spiffeid.RequireFromString("spiffe://example.org/other")); err == nil {
		t.Errorf("a client that authorizes another server ID got through: %q", reply)
	}
	// And the first still does, after the refusals.
	if reply, err := dial(client, serverID); err != nil || reply != "hello spiffe://example.org/client" {
		t.Fatalf("client again: %q, %v (server: %s)", reply, err, stderr.String())
	}
}

// TestSecurityHeader: without workload.spiffe.io: true every method is
// refused with InvalidArgument, and the refusal is reported.
func TestSecurityHeader(t *testing.T) {
	ts := serve(t, newCA(t, 1), "client", nil)
	c := ts.client(t)
	ctx := timeout(t)
	for name, md := range map[string]context.Context{
		"none":  ctx,
		"false": metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "false"),
		"twice": metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true", "workload.spiffe.io", "true"),
	} {
		calls := map[string]func() error{
			"FetchX509SVID":    func() error { s, err := c.FetchX509SVID(md, &workload.X509SVIDRequest{}); return recvErr(s, err) },
			"FetchX509Bundles": func() error { s, err := c.FetchX509Bundles(md, &workload.X509BundlesRequest{}); return recvErr(s, err) },
			"FetchJWTBundles":  func() error { s, err := c.FetchJWTBundles(md, &workload.JWTBundlesRequest{}); return recvErr(s, err) },
			"FetchJWTSVID": func() error {
				_, err := c.FetchJWTSVID(md, &workload.JWTSVIDRequest{Audience: []string{"x"}})
				return err
			},
			"ValidateJWTSVID": func() error {
				_, err := c.ValidateJWTSVID(md, &workload.ValidateJWTSVIDRequest{Audience: "x", Svid: "y"})
				return err
			},
		}
		for method, call := range calls {
			if err := call(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "security header") {
				t.Errorf("%s with header %s: %v, want InvalidArgument", method, name, err)
			}
		}
	}
	if !ts.refused.has("400 /SpiffeWorkloadAPI/FetchJWTSVID security header") || !ts.refused.has("400 /SpiffeWorkloadAPI/FetchX509SVID security header") {
		t.Errorf("refusals not reported: %v", ts.refused.why)
	}
	if n := len(ts.audit.all()); n != 0 {
		t.Errorf("%d audit lines for refused calls, want them counted by the registry instead", n)
	}
}

// recvErr is the error of a stream's first message.
func recvErr[T any](s grpc.ServerStreamingClient[T], err error) error {
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// TestErrorCodes: the spec's codes for what a caller gets wrong.
func TestErrorCodes(t *testing.T) {
	ts := serve(t, newCA(t, 1), "client", nil)
	c := ts.client(t)
	ctx := header(timeout(t))
	jwt := func(aud []string, id string) error {
		_, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: aud, SpiffeId: id})
		return err
	}
	validate := func(aud, svid string) error {
		_, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: aud, Svid: svid})
		return err
	}
	tok, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"mqtt"}, SpiffeId: "spiffe://example.org/client"})
	if err != nil {
		t.Fatalf("own SPIFFE ID asked for: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"JWT-SVID without audience", jwt(nil, ""), codes.InvalidArgument},
		{"JWT-SVID, an empty audience", jwt([]string{""}, ""), codes.InvalidArgument},
		{"JWT-SVID, an audience with a space", jwt([]string{"a b"}, ""), codes.InvalidArgument},
		{"JWT-SVID, an audience too long", jwt([]string{strings.Repeat("a", MaxAudience+1)}, ""), codes.InvalidArgument},
		{"JWT-SVID, too many audiences", jwt(slices.Repeat([]string{"a"}, MaxAudiences+1), ""), codes.InvalidArgument},
		{"JWT-SVID, a malformed SPIFFE ID", jwt([]string{"x"}, "spiffe://Example.org/client"), codes.InvalidArgument},
		{"JWT-SVID of another identity", jwt([]string{"x"}, "spiffe://example.org/server"), codes.PermissionDenied},
		{"JWT-SVID of another trust domain", jwt([]string{"x"}, "spiffe://other.org/client"), codes.PermissionDenied},
		{"validate without audience", validate("", tok.Svids[0].Svid), codes.InvalidArgument},
		{"validate without token", validate("mqtt", ""), codes.InvalidArgument},
		{"validate garbage", validate("mqtt", "garbage"), codes.InvalidArgument},
		{"validate for another audience", validate("other", tok.Svids[0].Svid), codes.InvalidArgument},
		{"validate a request larger than the bound", validate("mqtt", strings.Repeat("a", MaxRequest+1)), codes.ResourceExhausted},
		{"WIT-SVIDs", recvErr(c.FetchWITSVID(ctx, &workload.WITSVIDRequest{})), codes.Unimplemented},
	} {
		if got := status.Code(tc.err); got != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, tc.err, tc.want)
		}
	}
	if err := validate("mqtt", tok.Svids[0].Svid); err != nil {
		t.Errorf("validate the good token: %v", err)
	}
}

// TestX509StreamRenews: an open FetchX509SVID stream gets a new SVID, with
// a new key, at half of the last one's lifetime, and at once when the
// lifecycle secret rotates.
func TestX509StreamRenews(t *testing.T) {
	const ttl = 2 * time.Second
	ts := serve(t, newCA(t, 1), "client", func(c *Config) { c.X509TTL = ttl })
	ctx := header(timeout(t))
	stream, err := ts.client(t).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() (*x509.Certificate, []byte, time.Time) {
		t.Helper()
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		if len(m.Svids) != 1 || len(m.Svids[0].Bundle) == 0 || len(m.Svids[0].X509SvidKey) == 0 {
			t.Fatalf("a message without the full state: %d SVIDs", len(m.Svids))
		}
		leaf, err := x509.ParseCertificate(m.Svids[0].X509Svid)
		if err != nil {
			t.Fatal(err)
		}
		return leaf, m.Svids[0].X509SvidKey, at
	}
	first, firstKey, _ := recv()
	second, secondKey, at := recv()
	half := first.NotBefore.Add(ttl / 2)
	if at.Before(half.Add(-50*time.Millisecond)) || at.After(half.Add(time.Second)) {
		t.Errorf("renewed at %s, the first SVID's half-life is %s", at.Format(time.StampMilli), half.Format(time.StampMilli))
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || bytes.Equal(firstKey, secondKey) {
		t.Error("the renewal has the first SVID's serial or key")
	}
	checkX509SVID(t, second, spiffeid.RequireFromString("spiffe://example.org/client"), ttl)

	// A rotation, long before the next half-life.
	ts2 := serve(t, newCA(t, 1), "client", nil)
	stream, err = ts2.client(t).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := recv()
	rotated := time.Now()
	ts2.gens.Set(8)
	after, _, at := recv()
	if at.Sub(rotated) > time.Second || after.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Errorf("after the rotation: a new SVID %v, %s later", after.SerialNumber.Cmp(before.SerialNumber) != 0, at.Sub(rotated))
	}
	ts2.audit.await(t, "spiffe-x509-issued", func(f map[string]string) bool { return f["generation"] == "8" })
}

// TestBounds: a container over its bounds is refused with
// ResourceExhausted, and gets its room back when it lets go.
func TestBounds(t *testing.T) {
	ts := serve(t, newCA(t, 1), "client", nil)
	ctx := header(timeout(t))

	// Streams, over several connections.
	var cancels []context.CancelFunc
	conns := []workload.SpiffeWorkloadAPIClient{ts.client(t), ts.client(t), ts.client(t)}
	for i := range MaxStreams {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		s, err := conns[i%len(conns)].FetchX509Bundles(sctx, &workload.X509BundlesRequest{})
		if err := recvErr(s, err); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if err := recvErr(conns[0].FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("stream %d: %v, want ResourceExhausted", MaxStreams+1, err)
	}
	cancels[0]()
	var err error
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = recvErr(conns[1].FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("a stream after one closed: %v", err)
	}
	for _, c := range cancels {
		c()
	}
	if !ts.refused.has("429 /SpiffeWorkloadAPI/FetchJWTBundles too many open streams") {
		t.Errorf("the stream refusal was not reported: %v", ts.refused.why)
	}

	// The container's rate.
	ts.limit.after = 2500 * time.Millisecond
	ts.limit.deny.Store(true)
	var trailer metadata.MD
	_, err = conns[0].FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted || !slices.Equal(trailer.Get("retry-after"), []string{"3"}) {
		t.Errorf("over the rate: %v, retry-after %v; want ResourceExhausted, 3", err, trailer.Get("retry-after"))
	}
	if err := recvErr(conns[0].FetchX509SVID(ctx, &workload.X509SVIDRequest{})); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a stream over the rate: %v", err)
	}
	if !ts.refused.has("429 /SpiffeWorkloadAPI/FetchX509SVID too many requests") {
		t.Errorf("the rate refusal was not reported: %v", ts.refused.why)
	}
	ts.limit.deny.Store(false)

	// Connections: MaxConns held without a word of HTTP/2, then a client
	// waits in the backlog, getting nowhere until they go.
	var held []net.Conn
	for range MaxConns {
		c, err := net.Dial("unix", ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // accepted
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := ts.client(t).FetchJWTSVID(short, &workload.JWTSVIDRequest{Audience: []string{"x"}}); err == nil {
		t.Error("a call got through with every connection slot held")
	}
	// Three connections above are still open: release what this held.
	for _, c := range held {
		c.Close()
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err = ts.client(t).FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}}); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("a call after the held connections closed: %v", err)
	}
}

// TestCloseEndsStreams: closing the server (the container is gone) ends
// its open streams, frees their slots and returns from Serve.
func TestCloseEndsStreams(t *testing.T) {
	ts := serve(t, newCA(t, 1), "client", nil)
	ctx := header(timeout(t))
	c := ts.client(t)
	x, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err := recvErr(x, err); err != nil {
		t.Fatal(err)
	}
	b, err := c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err := recvErr(b, err); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	for _, s := range []interface{ RecvMsg(any) error }{x, b} {
		if err := s.RecvMsg(new(workload.X509SVIDResponse)); err == nil {
			t.Error("a stream outlived the server")
		}
	}
	select {
	case err := <-ts.served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	for deadline := time.Now().Add(2 * time.Second); len(ts.streams) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d stream slots still held after Close", len(ts.streams))
		}
	}
	if _, err := os.Stat(ts.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v", err)
	}
}

func TestNewServerRefuses(t *testing.T) {
	ca := newCA(t, 1)
	ok := Config{CA: ca, Lifecycle: NewGenerations(1), Audit: &recorder{}, Limiter: &limiter{}, X509TTL: time.Hour, JWTTTL: time.Minute}
	for name, c := range map[string]Config{
		"no CA":        {Lifecycle: ok.Lifecycle, Audit: ok.Audit, Limiter: ok.Limiter, X509TTL: time.Hour, JWTTTL: time.Minute},
		"no limiter":   {CA: ca, Lifecycle: ok.Lifecycle, Audit: ok.Audit, X509TTL: time.Hour, JWTTTL: time.Minute},
		"no lifecycle": {CA: ca, Audit: ok.Audit, Limiter: ok.Limiter, X509TTL: time.Hour, JWTTTL: time.Minute},
		"no audit":     {CA: ca, Lifecycle: ok.Lifecycle, Limiter: ok.Limiter, X509TTL: time.Hour, JWTTTL: time.Minute},
		"no lifetime":  {CA: ca, Lifecycle: ok.Lifecycle, Audit: ok.Audit, Limiter: ok.Limiter},
	} {
		if _, err := NewServer("client", c); err == nil {
			t.Errorf("%s: NewServer accepted it", name)
		}
	}
	if _, err := NewServer("not an identity", ok); err == nil {
		t.Error("NewServer accepted an invalid identity")
	}
}

// TestFailsClosedWithoutAudit: what the audit log cannot record is not
// handed out: no X.509-SVID, no JWT-SVID, no validation.
func TestFailsClosedWithoutAudit(t *testing.T) {
	ts := serve(t, newCA(t, 1), "client", nil)
	c := ts.client(t)
	ctx := header(timeout(t))
	tok, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"mqtt"}})
	if err != nil {
		t.Fatal(err)
	}
	ts.audit.full.Store(true)
	s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); status.Code(err) != codes.Unavailable || m != nil {
		t.Errorf("X.509-SVID with a full audit log: %v, %v; want Unavailable and nothing", m, err)
	}
	if _, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"mqtt"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("JWT-SVID with a full audit log: %v, want Unavailable", err)
	}
	if _, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "mqtt", Svid: tok.Svids[0].Svid}); status.Code(err) != codes.Unavailable {
		t.Errorf("validation with a full audit log: %v, want Unavailable", err)
	}
	ts.audit.full.Store(false)
	if _, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "mqtt", Svid: tok.Svids[0].Svid}); err != nil {
		t.Errorf("validation once the log takes lines again: %v", err)
	}
}
