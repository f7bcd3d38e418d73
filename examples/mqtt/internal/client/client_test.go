// SPDX-License-Identifier: Apache-2.0

package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The round trip against a real broker, and refusals, are tested in
// ../broker (which starts both in-process). These cover what needs no
// broker.

func run(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	var out bytes.Buffer
	err = Run(context.Background(), append([]string{"--auth", "secret"}, args...), &out, io.Discard)
	return out.String(), err
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"--bogus"}},
		{"stray argument", []string{"extra"}},
		{"password and no-password", []string{"--password", "x", "--no-password"}},
		{"zero timeout", []string{"--timeout", "0s"}},
		{"negative timeout", []string{"--timeout", "-1s"}},
		{"wildcard topic", []string{"--topic", "a/#"}},
		{"empty topic", []string{"--topic", ""}},
		{"unknown way in", []string{"--auth", "bogus"}},
		{"no-certificate without mtls", []string{"--no-certificate"}},
		{"mtls to a broker that is no identity", []string{"--auth", "mtls", "--audience", "two words", "--spiffe-socket", "unix:///nonexistent.sock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := run(t, tc.args...); !errors.Is(err, ErrUsage) || ExitCode(err) != 2 {
				t.Fatalf("Run: err = %v (exit %d), want usage, exit 2", err, ExitCode(err))
			}
		})
	}
}

func TestHelpIsNotAnError(t *testing.T) {
	if _, err := run(t, "-h"); err != nil {
		t.Fatalf("Run(-h) = %v", err)
	}
}

func TestBadSecretFile(t *testing.T) {
	dir := t.TempDir()
	malformed := filepath.Join(dir, "secret")
	if err := os.WriteFile(malformed, []byte(strings.Repeat("a", 64)+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing"), malformed, dir} {
		_, err := run(t, "--secret-file", path, "--broker", "127.0.0.1:1")
		if err == nil || ExitCode(err) != 1 || !strings.HasPrefix(err.Error(), "read secret file") {
			t.Errorf("%s: err = %v (exit %d), want read secret error, exit 1", path, err, ExitCode(err))
		}
		if err != nil && strings.Contains(err.Error(), "aaaaaaaa") {
			t.Errorf("error quotes the secret file: %v", err)
		}
	}
}

func TestBrokerUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err = run(t, "--broker", addr, "--no-password", "--timeout", "2s")
	if ExitCode(err) != 1 || !strings.HasPrefix(err.Error(), "connect to "+addr+": ") {
		t.Fatalf("Run: err = %v (exit %d), want connect error, exit 1", err, ExitCode(err))
	}
}

// A peer that accepts TCP but never speaks MQTT: the client gives up after
// --timeout with an ordinary failure, not a refusal.
func TestSilentBrokerTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // until the client hangs up
	}()
	start := time.Now()
	_, err = run(t, "--broker", l.Addr().String(), "--no-password", "--timeout", "200ms")
	if ExitCode(err) != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: err = %v (exit %d), want deadline exceeded, exit 1", err, ExitCode(err))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v with --timeout 200ms", d)
	}
}

func TestRefusedError(t *testing.T) {
	for _, tc := range []struct {
		err  *RefusedError
		want string
	}{
		{&RefusedError{Code: 0x86}, "refused by broker: Bad User Name or Password (0x86)"},
		{&RefusedError{Code: 0x87}, "refused by broker: Not authorized (0x87)"},
		{&RefusedError{Code: 0x86, Reason: "go away"}, "refused by broker: Bad User Name or Password (0x86): go away"},
		{&RefusedError{Code: 0x86, Reason: "x\ny"}, `refused by broker: Bad User Name or Password (0x86): "x\ny"`},
		{&RefusedError{Code: 0xfe}, "refused by broker: unknown reason code (0xfe)"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if code := ExitCode(fmt.Errorf("wrapped: %w", tc.err)); code != 3 {
			t.Errorf("ExitCode = %d, want 3", code)
		}
	}
	if ExitCode(nil) != 0 || ExitCode(errors.New("x")) != 1 {
		t.Error("ExitCode of nil / plain error")
	}
}
