// SPDX-License-Identifier: Apache-2.0

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const good = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"64 lowercase hex", good, true},
		{"empty", "", false},
		{"63 characters", good[:63], false},
		{"65 characters", good + "0", false},
		{"trailing newline", good + "\n", false},
		{"leading space", " " + good[1:], false},
		{"uppercase hex", strings.ToUpper(good), false},
		{"non-hex letter", "g" + good[1:], false},
		{"NUL byte", "\x00" + good[1:], false},
		{"32 raw bytes twice", strings.Repeat("\xff", 64), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSecret([]byte(tc.text))
			if tc.ok {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if !s.Matches([]byte(tc.text)) {
					t.Error("secret does not match its own text")
				}
				return
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse: err = %v, want ErrMalformed", err)
			}
			if len(tc.text) > 8 && strings.Contains(err.Error(), tc.text[:8]) {
				t.Errorf("error %q quotes the content", err)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	s, err := ParseSecret([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	other := "f" + good[1:]
	for _, tc := range []struct {
		name, password string
		want           bool
	}{
		{"same text", good, true},
		{"one character differs", other, false},
		{"empty", "", false},
		{"prefix", good[:32], false},
		{"with newline", good + "\n", false},
		{"uppercase", strings.ToUpper(good), false},
	} {
		if got := s.Matches([]byte(tc.password)); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := ReadSecret(write("ok", good))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !s.Matches([]byte(good)) {
		t.Error("read secret does not match the file")
	}
	pw := s.Password()
	if string(pw) != good {
		t.Error("Password() is not the file's text")
	}
	s.Zero()
	if s.Matches(pw) {
		t.Error("Zero did not overwrite the secret")
	}

	for _, tc := range []struct {
		name, path string
		want       error // nil: any error
	}{
		{"missing file", filepath.Join(dir, "missing"), os.ErrNotExist},
		{"empty file", write("empty", ""), ErrMalformed},
		{"trailing newline (echo)", write("newline", good+"\n"), ErrMalformed},
		{"huge file", write("huge", strings.Repeat(good, 1000)), ErrMalformed},
		{"directory", dir, nil},
		{"FIFO without a writer (must not hang)", fifo, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSecret(tc.path)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Read: err = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), good[:16]) {
				t.Errorf("error %q quotes the content", err)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s, err := ParseSecret([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		if out := fmt.Sprintf(verb, s); strings.Contains(out, good[:8]) || !strings.Contains(out, "redacted") {
			t.Errorf("Sprintf(%q) = %q", verb, out)
		}
	}
	if out := fmt.Sprint(struct{ S *Secret }{s}); strings.Contains(out, good[:8]) {
		t.Errorf("Sprint(struct) = %q", out)
	}
	if b, err := json.Marshal(struct{ S *Secret }{s}); err == nil {
		t.Errorf("json.Marshal = %s, want an error", b)
	}
}

// FuzzParse: Parse never panics, accepts exactly 64 lowercase hex
// characters, and its errors never quote the input.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(good + "\n"))
	f.Add([]byte(strings.ToUpper(good)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, text []byte) {
		s, err := ParseSecret(text)
		valid := len(text) == SecretSize && strings.Trim(string(text), "0123456789abcdef") == ""
		if (err == nil) != valid {
			t.Fatalf("ParseSecret(%q): err = %v, valid = %v", text, err, valid)
		}
		if err != nil {
			if len(text) >= 4 && strings.Contains(err.Error(), string(text)) {
				t.Fatalf("error %q quotes the input", err)
			}
			return
		}
		if !s.Matches(text) {
			t.Fatal("secret does not match its text")
		}
	})
}

// TestReadSecretsAndWatch: the secret and, after a rotation, the one
// before it; a watch fires when the files change.
func TestReadSecretsAndWatch(t *testing.T) {
	dir := t.TempDir()
	other := "f" + good[1:]
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(good), 0o400); err != nil {
		t.Fatal(err)
	}
	cur, prev, err := ReadSecrets(filepath.Join(dir, "secret"))
	if err != nil || !cur.Matches([]byte(good)) || prev != nil {
		t.Fatalf("before a rotation: %v %v %v", cur, prev, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed, err := WatchSecrets(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	// A rotation, as the agent makes it: the one before, then the new one
	// renamed over the secret.
	for name, content := range map[string]string{"secret.previous": good, "secret": other} {
		if err := os.WriteFile(filepath.Join(dir, name+".new"), []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, name+".new"), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("no change seen after a rotation")
	}
	cur, prev, err = ReadSecrets(filepath.Join(dir, "secret"))
	if err != nil || !cur.Matches([]byte(other)) || prev == nil || !prev.Matches([]byte(good)) {
		t.Fatalf("after a rotation: current matches the new %v, previous %v, %v", cur != nil && cur.Matches([]byte(other)), prev, err)
	}
	cancel()
	for range changed {
	}
}
