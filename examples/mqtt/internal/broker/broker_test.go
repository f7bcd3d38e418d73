// SPDX-License-Identifier: Apache-2.0

package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	northstar "github.com/northstar-oci/northstar/client"
	"github.com/northstar-oci/northstar/examples/mqtt/internal/broker"
	"github.com/northstar-oci/northstar/examples/mqtt/internal/client"
)

// syncBuffer is a log sink shared by the broker's goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newSecretHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeSecretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o400); err != nil {
		t.Fatal(err)
	}
	return p
}

// testBroker is a broker on 127.0.0.1 with a fresh secret.
type testBroker struct {
	*broker.Broker
	secret     string // the hex text
	secretFile string
	log        *syncBuffer
}

// startBroker starts a broker on a loopback port. At cleanup it stops the
// broker and fails the test if the log holds the secret.
func startBroker(t *testing.T) *testBroker {
	t.Helper()
	tb := &testBroker{secret: newSecretHex(t), log: new(syncBuffer)}
	tb.secretFile = writeSecretFile(t, tb.secret)
	var err error
	tb.Broker, err = broker.Start(broker.Config{Listen: "127.0.0.1:0", SecretFile: tb.secretFile, Log: tb.log})
	if err != nil {
		t.Fatalf("broker.Start: %v", err)
	}
	t.Cleanup(func() {
		tb.Close()
		log := tb.log.String()
		if strings.Contains(log, tb.secret) {
			t.Errorf("broker log contains the secret:\n%s", log)
		}
		if t.Failed() {
			t.Logf("broker log:\n%s", log)
		}
	})
	return tb
}

// runClient runs the client command as the binary would and returns its
// stdout, stderr (with main's "client: <error>" line) and exit status.
func runClient(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	// These tests cover the shared-secret mode; the token mode needs the
	// northstar API and is tested end to end (integration/mqtt_test.go).
	err := client.Run(context.Background(), append([]string{"--auth", "secret"}, args...), &out, &errOut)
	if err != nil {
		errOut.WriteString("client: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), client.ExitCode(err)
}

var roundTripOK = regexp.MustCompile(`^client: authenticated, round trip ok \(topic northstar/demo, \d+ ms\)\n$`)

func TestClientWithSecretRoundTrips(t *testing.T) {
	b := startBroker(t)
	stdout, stderr, code := runClient(t, "--broker", b.Addr(), "--secret-file", b.secretFile, "--client-id", "insider", "--timeout", "3s")
	if code != 0 || !roundTripOK.MatchString(stdout) || stderr != "" {
		t.Fatalf("client: exit %d\nstdout: %q\nstderr: %q", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, b.secret) {
		t.Error("client printed the secret")
	}
	b.Close()
	want := regexp.MustCompile(`(?m)^broker: accepted client_id="insider" username="northstar" remote=127\.0\.0\.1:\d+$`)
	if log := b.log.String(); !want.MatchString(log) {
		t.Errorf("broker log lacks the accepted line:\n%s", log)
	}
}

func TestClientsShareTopicAndBroker(t *testing.T) {
	b := startBroker(t)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			if stdout, stderr, code := runClient(t, "--broker", b.Addr(), "--secret-file", b.secretFile); code != 0 || !roundTripOK.MatchString(stdout) {
				errs <- stdout + stderr
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent client failed: %s", e)
	}
}

func TestOutsidersAreRefused(t *testing.T) {
	b := startBroker(t)
	otherLifecycle := newSecretHex(t)
	for _, tc := range []struct {
		name     string
		args     []string
		wantOut  string // client's stderr
		wantLog  string // broker's line for the connection
		password string // must not appear in the broker log
	}{
		{
			name:     "secret of another lifecycle",
			args:     []string{"--password", otherLifecycle},
			wantOut:  "client: refused by broker: Bad User Name or Password (0x86)\n",
			wantLog:  "broker: refused: bad password",
			password: otherLifecycle,
		},
		{
			name:    "guessed password",
			args:    []string{"--password", "hunter2"},
			wantOut: "client: refused by broker: Bad User Name or Password (0x86)\n",
			wantLog: "broker: refused: bad password",
		},
		{
			name:    "right secret plus newline",
			args:    []string{"--password", b.secret + "\n"},
			wantOut: "client: refused by broker: Bad User Name or Password (0x86)\n",
			wantLog: "broker: refused: bad password",
		},
		{
			name:    "right secret uppercased",
			args:    []string{"--password", strings.ToUpper(b.secret)},
			wantOut: "client: refused by broker: Bad User Name or Password (0x86)\n",
			wantLog: "broker: refused: bad password",
		},
		{
			name:    "no password",
			args:    []string{"--no-password"},
			wantOut: "client: refused by broker: Bad User Name or Password (0x86)\n",
			wantLog: "broker: refused: no password",
		},
		{
			name:    "no password, no username",
			args:    []string{"--no-password", "--username", ""},
			wantOut: "client: refused by broker: Bad User Name or Password (0x86)\n",
			wantLog: "broker: refused: no password",
		},
		{
			// MQTT forbids the password flag with an empty password:
			// mochi rejects the CONNECT before authentication.
			name:    "empty password",
			args:    []string{"--password", ""},
			wantOut: "client: refused by broker: Protocol Error (0x82)\n",
			wantLog: "broker: mochi: WARN connection ended listener=tcp error=\"protocol violation: password flag set but no value\"",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "outsider-" + strings.ReplaceAll(tc.name, " ", "-")
			args := append([]string{"--broker", b.Addr(), "--client-id", id, "--timeout", "3s"}, tc.args...)
			stdout, stderr, code := runClient(t, args...)
			if code != 3 || stdout != "" || stderr != tc.wantOut {
				t.Fatalf("client: exit %d, stdout %q, stderr %q; want exit 3, stderr %q", code, stdout, stderr, tc.wantOut)
			}
			if !waitForLog(b.log, tc.wantLog) {
				t.Errorf("broker log lacks %q", tc.wantLog)
			}
			if tc.password != "" && strings.Contains(b.log.String(), tc.password) {
				t.Error("broker log contains the password")
			}
		})
	}
	// Refusals are logged with the client's id, once each.
	b.Close()
	log := b.log.String()
	if n := strings.Count(log, `refused: bad password client_id="outsider-guessed-password" username="northstar" remote=127.0.0.1:`); n != 1 {
		t.Errorf("refusal of outsider-guessed-password logged %d times, want 1:\n%s", n, log)
	}
	if strings.Contains(log, "hunter2") {
		t.Error("broker log contains a client's password")
	}
	if strings.Contains(log, `error="bad username or password"`) {
		t.Error("broker log repeats refusals in mochi's words")
	}
}

// waitForLog polls for a log line: the broker logs the refusal just before it
// sends the CONNACK, so by the time the client has returned the line is
// normally there already.
func waitForLog(log *syncBuffer, want string) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(log.String(), want) {
			return true
		}
	}
	return false
}

func TestClientChosenFieldsCannotForgeLogLines(t *testing.T) {
	b := startBroker(t)
	_, err := client.RoundTrip(context.Background(), client.Config{
		Broker:       b.Addr(),
		ClientID:     "evil",
		Username:     "x\nbroker: accepted client_id=\"forged\"",
		Password:     []byte("wrong"),
		SendPassword: true,
		Topic:        "t",
		Timeout:      3 * time.Second,
	})
	var refused *client.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("RoundTrip: err = %v, want refused", err)
	}
	b.Close()
	for line := range strings.Lines(b.log.String()) {
		if strings.HasPrefix(line, `broker: accepted client_id="forged"`) {
			t.Errorf("forged log line: %q", line)
		}
	}
	if want := `broker: refused: bad password client_id="evil" username="x\nbroker: accepted client_id=\"forged\""`; !strings.Contains(b.log.String(), want) {
		t.Errorf("broker log lacks %q", want)
	}
}

// An authenticated client that sends a second CONNECT makes mochi log
// "error processing packet" with the whole packet, password included. The
// broker's log handler must leave the packet out.
func TestSecondConnectDoesNotLogThePassword(t *testing.T) {
	b := startBroker(t)
	conn, err := net.DialTimeout("tcp", b.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	connect := func() {
		cp := packets.NewControlPacket(packets.CONNECT)
		c := cp.Content.(*packets.Connect)
		c.ProtocolName, c.ProtocolVersion = "MQTT", 5
		c.ClientID, c.KeepAlive, c.CleanStart = "twice", 30, true
		c.UsernameFlag, c.Username = true, "u"
		c.PasswordFlag, c.Password = true, []byte(b.secret)
		if _, err := cp.WriteTo(conn); err != nil {
			t.Fatalf("write CONNECT: %v", err)
		}
	}
	connect()
	ack, err := packets.ReadPacket(conn)
	if err != nil || ack.Type != packets.CONNACK || ack.Content.(*packets.Connack).ReasonCode != 0 {
		t.Fatalf("CONNACK: %v, %v", ack, err)
	}
	connect()
	// The broker answers with DISCONNECT (protocol error) and closes.
	for {
		if _, err := packets.ReadPacket(conn); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Logf("read after second CONNECT: %v", err)
			}
			break
		}
	}
	b.Close() // waits for the client goroutine, which logs before it ends
	log := b.log.String()
	if !strings.Contains(log, "broker: mochi: WARN error processing packet") || !strings.Contains(log, "pk=[omitted]") {
		t.Errorf("broker log lacks mochi's redacted warning:\n%s", log)
	}
	// startBroker's cleanup checks the secret is absent.
}

func TestStartFailsOnBusyPort(t *testing.T) {
	b := startBroker(t)
	if b2, err := broker.Start(broker.Config{Listen: b.Addr(), SecretFile: b.secretFile}); err == nil {
		b2.Close()
		t.Fatal("second broker on the same port started")
	}
}

func TestRunRefusesMalformedSecret(t *testing.T) {
	good := newSecretHex(t)
	for _, tc := range []struct {
		name, content string
	}{
		{"empty", ""},
		{"63 characters", good[:63]},
		{"trailing newline", good + "\n"},
		{"uppercase", strings.ToUpper(good)},
		{"not hex", strings.Repeat("z", 64)},
		{"raw 32 bytes", string(make([]byte, 32))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeSecretFile(t, tc.content)
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := broker.Run(ctx, []string{"--auth", "secret", "--listen", "127.0.0.1:0", "--secret-file", path}, &stdout, &stderr)
			if err == nil || broker.ExitCode(err) != 1 || !errors.Is(err, northstar.ErrMalformed) {
				t.Fatalf("Run: err = %v (exit %d), want a malformed-secret error, exit 1", err, broker.ExitCode(err))
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || len(tc.content) > 8 && strings.Contains(msg, tc.content[:8]) {
				t.Errorf("error is not one clean line: %q", msg)
			}
			if stdout.Len() != 0 {
				t.Errorf("broker printed %q before refusing to start", stdout.String())
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		err := broker.Run(context.Background(), []string{"--auth", "secret", "--secret-file", filepath.Join(t.TempDir(), "nope")}, io.Discard, io.Discard)
		if !errors.Is(err, os.ErrNotExist) || broker.ExitCode(err) != 1 {
			t.Fatalf("Run: err = %v, want not-exist, exit 1", err)
		}
	})
	t.Run("usage", func(t *testing.T) {
		err := broker.Run(context.Background(), []string{"--no-such-flag"}, io.Discard, io.Discard)
		if broker.ExitCode(err) != 2 {
			t.Fatalf("Run: err = %v (exit %d), want exit 2", err, broker.ExitCode(err))
		}
	})
}

// TestRunServesUntilCancelled drives the command as main does: start, serve
// a client, shut down when the context ends (main's SIGINT/SIGTERM).
func TestRunServesUntilCancelled(t *testing.T) {
	secret := newSecretHex(t)
	path := writeSecretFile(t, secret)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pr, pw := io.Pipe()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	done := make(chan error, 1)
	go func() {
		done <- broker.Run(ctx, []string{"--auth", "secret", "--listen", "127.0.0.1:0", "--secret-file", path}, pw, io.Discard)
		pw.Close()
	}()

	var addr string
	select {
	case l := <-lines:
		var ok bool
		if addr, ok = strings.CutPrefix(l, "broker: listening on "); !ok {
			t.Fatalf("first line %q, want the listening line", l)
		}
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("no listening line")
	}

	if stdout, stderr, code := runClient(t, "--broker", addr, "--secret-file", path); code != 0 {
		t.Fatalf("client: exit %d: %s%s", code, stdout, stderr)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
		if strings.Contains(l, secret) {
			t.Errorf("log line contains the secret: %q", l)
		}
	}
	if got := strings.Join(rest, "\n"); !strings.Contains(got, "broker: accepted client_id=") || !strings.HasSuffix(got, "broker: shutting down\nbroker: stopped") {
		t.Errorf("log after start:\n%s", got)
	}
}

// TestRotationReachesTheBroker: after a live rotation (the new secret
// renamed over the file, the old one beside it as secret.previous), the
// broker, not restarted, lets in a client with the new secret and, during
// the grace period, one still holding the old; once the grace is over
// (secret.previous gone), only the new.
func TestRotationReachesTheBroker(t *testing.T) {
	b := startBroker(t)
	dir := filepath.Dir(b.secretFile)
	old, rotated := b.secret, newSecretHex(t)
	put := func(name, content string) {
		t.Helper()
		tmp := filepath.Join(dir, name+".new")
		if err := os.WriteFile(tmp, []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	put("secret.previous", old)
	put("secret", rotated)
	login := func(password string) int {
		_, _, code := runClient(t, "--broker", b.Addr(), "--password", password, "--timeout", "3s")
		return code
	}
	if code := login(rotated); code != 0 {
		t.Errorf("a client with the rotated secret: exit %d, want accepted", code)
	}
	if code := login(old); code != 0 {
		t.Errorf("a client with the secret before the rotation, during the grace: exit %d, want accepted", code)
	}
	if err := os.Remove(filepath.Join(dir, "secret.previous")); err != nil {
		t.Fatal(err)
	}
	if code := login(old); code != 3 {
		t.Errorf("a client with the old secret after the grace: exit %d, want refused (3)", code)
	}
	if log := b.log.String(); !strings.Contains(log, "accepted (the secret before the last rotation)") {
		t.Errorf("the broker's log does not say it took the previous secret:\n%s", log)
	}
	// startBroker's cleanup checks the old secret is absent from the log;
	// the new one must be too.
	if strings.Contains(b.log.String(), rotated) {
		t.Error("the broker's log holds the rotated secret")
	}
}
