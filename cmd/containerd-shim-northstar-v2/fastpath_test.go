// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/shim/fastpath"
)

// fastPathSite is the built wrapper, a config naming a socket where the
// test answers as the agent would, and a delegate that records how it was
// run.
type fastPathSite struct {
	bin, dir, config, sock, delegate, ran string
	ln                                    *net.UnixListener
	mu                                    sync.Mutex
	got                                   []shimstart.Request
	answer                                func(shimstart.Request) []byte
	refuse                                bool // close before reading, as the agent refuses a peer
}

func newFastPathSite(t *testing.T) *fastPathSite {
	t.Helper()
	if !fastpath.Enabled {
		t.Fatal("built without cgo: the shim's fast path is C (make test sets CGO_ENABLED=1)")
	}
	dir := t.TempDir()
	s := &fastPathSite{dir: dir, bin: filepath.Join(dir, "containerd-shim-northstar-v2"), sock: filepath.Join(dir, "agent.sock"),
		config: filepath.Join(dir, "config.toml"), delegate: filepath.Join(dir, "delegate"), ran: filepath.Join(dir, "ran")}
	// As make build links it: the fast path is C.
	if out, err := exec.Command("../../scripts/build-cgo.sh", "containerd-shim-northstar-v2", s.bin).CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-cgo.sh: %v\n%s", err, out)
	}
	script := "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > " + s.ran + "\n"
	if err := os.WriteFile(s.delegate, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The Go wrapper, when it runs, fails on its own [shim] delegate: the
	// fast path never reads it.
	s.writeConfig(t, fmt.Sprintf("# the agent\n[agent]\nsocket = %q # here\n\n[shim]\ndelegate = \"/nonexistent/containerd-shim-runc-v2\"\n", s.sock))
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	t.Cleanup(func() { ln.Close() })
	go s.serve()
	return s
}

func (s *fastPathSite) writeConfig(t *testing.T, body string) {
	t.Helper()
	if err := os.WriteFile(s.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// serve answers each request with s.answer (nil: closes unanswered).
func (s *fastPathSite) serve() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.mu.Lock()
		refuse := s.refuse
		s.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		buf := make([]byte, shimstart.MaxRequest+1)
		n, err := c.Read(buf)
		if err == nil && n > 0 && buf[0] == shimstart.Op {
			req, derr := shimstart.Decode(buf[1:n])
			s.mu.Lock()
			s.got = append(s.got, req)
			answer := s.answer
			s.mu.Unlock()
			if derr == nil && answer != nil {
				c.Write(answer(req))
			}
		}
		c.Close()
	}
}

func (s *fastPathSite) requests() []shimstart.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

func (s *fastPathSite) setAnswer(a func(shimstart.Request) []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer, s.got = a, nil
}

type run struct {
	stdout, stderr string
	err            error
}

// start runs the wrapper as containerd runs `start`: the bundle as its
// working directory.
func (s *fastPathSite) start(t *testing.T, bundle string, args ...string) run {
	t.Helper()
	os.Remove(s.ran)
	if args == nil {
		args = []string{"-namespace", "default", "-address", "/run/containerd/containerd.sock", "-id", "ctr-1", "start"}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "NORTHSTAR_CONFIG="+s.config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return run{stdout.String(), stderr.String(), err}
}

// delegateRan returns the delegate's argv, nil when it did not run.
func (s *fastPathSite) delegateRan(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(s.ran)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// TestFastPath: the C fast path of `start` sends the agent the config it
// found, the bundle, the id and containerd's pid, and execs the delegate
// the agent names with containerd's arguments; an agent's error fails the
// start on one line; "not served", a connection closed unanswered or a
// delegate that is this binary leave the start to the Go wrapper or fail
// it, as the wire format says.
func TestFastPath(t *testing.T) {
	s := newFastPathSite(t)
	bundle := t.TempDir()

	s.setAnswer(func(shimstart.Request) []byte { return shimstart.Answer(s.delegate, true, nil) })
	r := s.start(t, bundle)
	if r.err != nil {
		t.Fatalf("served start failed: %v\n%s", r.err, r.stderr)
	}
	want := shimstart.Request{Config: s.config, Bundle: bundle, ID: "ctr-1", Parent: os.Getpid()}
	if got := s.requests(); len(got) != 1 || got[0] != want {
		t.Fatalf("the agent was asked %+v, want %+v", got, want)
	}
	argv := s.delegateRan(t)
	wantArgv := []string{s.delegate, "-namespace", "default", "-address", "/run/containerd/containerd.sock", "-id", "ctr-1", "start"}
	if strings.Join(argv, " ") != strings.Join(wantArgv, " ") {
		t.Errorf("the delegate ran as %q, want %q", argv, wantArgv)
	}
	if r.stdout != "" || r.stderr != "" {
		t.Errorf("the fast path printed stdout %q, stderr %q", r.stdout, r.stderr)
	}

	// -bundle and -id=: as parseArgs reads them.
	s.setAnswer(func(shimstart.Request) []byte { return shimstart.Answer(s.delegate, true, nil) })
	if r := s.start(t, t.TempDir(), "-debug", "-id=other", "-bundle", bundle, "start"); r.err != nil {
		t.Fatalf("served start failed: %v\n%s", r.err, r.stderr)
	}
	if got := s.requests(); len(got) != 1 || got[0].Bundle != bundle || got[0].ID != "other" {
		t.Errorf("the agent was asked %+v", got)
	}

	s.setAnswer(func(shimstart.Request) []byte {
		return shimstart.Answer("", true, fmt.Errorf("agent: container %s is revoked", "ctr-1"))
	})
	r = s.start(t, bundle)
	if r.err == nil || r.stderr != "northstar shim: agent: container ctr-1 is revoked\n" || s.delegateRan(t) != nil {
		t.Errorf("a failed start: %v, stderr %q, delegate ran %v", r.err, r.stderr, s.delegateRan(t) != nil)
	}

	self, _ := filepath.Abs(s.bin)
	s.setAnswer(func(shimstart.Request) []byte { return shimstart.Answer(self, true, nil) })
	if r := s.start(t, bundle); r.err == nil || !strings.Contains(r.stderr, "is this wrapper itself") {
		t.Errorf("the wrapper execing itself: %v, stderr %q", r.err, r.stderr)
	}

	// Not served, or closed unanswered (an older agent): the Go wrapper,
	// which reads [shim] delegate and fails on it here.
	for name, answer := range map[string]func(shimstart.Request) []byte{
		"not served": func(shimstart.Request) []byte { return shimstart.Answer("", false, fmt.Errorf("another config")) },
		"unanswered": nil,
	} {
		s.setAnswer(answer)
		r := s.start(t, bundle)
		if len(s.requests()) != 1 || r.err == nil || !strings.Contains(r.stderr, "/nonexistent/containerd-shim-runc-v2 is not an executable file") {
			t.Errorf("%s: asked %d times, %v, stderr %q; want the Go wrapper's start", name, len(s.requests()), r.err, r.stderr)
		}
	}
	// Refused before the agent read the request (another mount namespace,
	// a kernel without SO_PEERPIDFD): the reader sees ECONNRESET, and the
	// Go wrapper starts the container.
	s.mu.Lock()
	s.refuse = true
	s.mu.Unlock()
	if r := s.start(t, bundle); r.err == nil || !strings.Contains(r.stderr, "/nonexistent/containerd-shim-runc-v2 is not an executable file") {
		t.Errorf("refused: %v, stderr %q; want the Go wrapper's start", r.err, r.stderr)
	}
}

// TestFastPathAsksOnlyWhenSure: the fast path asks the agent only for a
// `start` it parsed as the Go wrapper does, with a config line it reads
// whole; anything else is the Go wrapper's, which must not find an agent
// that already took the start.
func TestFastPathAsksOnlyWhenSure(t *testing.T) {
	s := newFastPathSite(t)
	s.setAnswer(func(shimstart.Request) []byte { return shimstart.Answer(s.delegate, true, nil) })
	bundle := t.TempDir()
	sock := strconv.Quote(s.sock)
	for _, c := range []struct {
		name, config string
		args         []string
	}{
		{"delete", "", []string{"-namespace", "default", "-id", "ctr-1", "delete"}},
		{"-v", "", []string{"-v"}},
		{"an unknown flag", "", []string{"-id", "ctr-1", "-bogus", "start"}},
		{"two actions", "", []string{"-id", "ctr-1", "start", "start"}},
		{"no id", "", []string{"-namespace", "default", "start"}},
		{"a relative -bundle", "", []string{"-id", "ctr-1", "-bundle", "rel", "start"}},
		{"an unclean -bundle", "", []string{"-id", "ctr-1", "-bundle", bundle + "/../x", "start"}},
		{"a multi-line string", "[shim]\ndelegate = \"\"\"\n[agent]\n\"\"\"\n[agent]\nsocket = " + sock + "\n", nil},
		{"an escape", "[agent]\nsocket = \"" + strings.ReplaceAll(s.sock, "/", "\\u002f") + "\"\n", nil},
		{"another table", "[agent.x]\nsocket = " + sock + "\n", nil},
		{"an array table", "[[agent]]\nsocket = " + sock + "\n", nil},
		{"a dotted key", "agent.socket = " + sock + "\n", nil},
		{"no socket", "[agent]\n", nil},
		{"text after the value", "[agent]\nsocket = " + sock + " x\n", nil},
	} {
		if c.config != "" {
			s.writeConfig(t, c.config)
		} else {
			s.writeConfig(t, "[agent]\nsocket = "+sock+"\n[shim]\ndelegate = \"/nonexistent/containerd-shim-runc-v2\"\n")
		}
		s.setAnswer(func(shimstart.Request) []byte { return shimstart.Answer(s.delegate, true, nil) })
		r := s.start(t, bundle, c.args...)
		if n := len(s.requests()); n != 0 || s.delegateRan(t) != nil {
			t.Errorf("%s: the agent was asked %d times (delegate ran: %v); stderr %q", c.name, n, s.delegateRan(t) != nil, r.stderr)
		}
	}
	// A relative NORTHSTAR_CONFIG, which the Go wrapper refuses: not
	// taken from the working directory (the bundle).
	if err := os.WriteFile(filepath.Join(bundle, "rel.toml"), []byte("[agent]\nsocket = "+sock+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel := exec.Command(s.bin, "-id", "ctr-1", "start")
	rel.Dir, rel.Env = bundle, append(os.Environ(), "NORTHSTAR_CONFIG=rel.toml")
	out, err := rel.CombinedOutput()
	if n := len(s.requests()); n != 0 || err == nil || !strings.Contains(string(out), "not an absolute path") {
		t.Errorf("a relative NORTHSTAR_CONFIG: the agent was asked %d times; %v, %q", n, err, out)
	}

	// The same config, read whole: served.
	s.writeConfig(t, "sealer = \"tpm\" # a comment\n\n[agent]\r\n  socket='"+s.sock+"'\n")
	s.setAnswer(func(shimstart.Request) []byte { return shimstart.Answer(s.delegate, true, nil) })
	if r := s.start(t, bundle); len(s.requests()) != 1 || r.err != nil {
		t.Errorf("a config of simple lines: asked %d times, %v, %q", len(s.requests()), r.err, r.stderr)
	}
}
