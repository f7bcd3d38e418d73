// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
	"github.com/northstar-oci/northstar/hook/agenthook/fastpath"
)

// fastPathSite is the built hook, a config naming a socket where the test
// answers as the agent would, and a northstar-hook beside the hook that
// records how it was run (argv, then the state it read on stdin).
type fastPathSite struct {
	bin, dir, config, sock, ran string
	ln                          *net.UnixListener
	mu                          sync.Mutex
	got                         []hookstart.Request
	answer                      []byte // nil: close unanswered
	silent                      bool   // hold the connection, never answer
}

func newFastPathSite(t *testing.T) *fastPathSite {
	t.Helper()
	if !fastpath.Enabled {
		t.Fatal("built without cgo: the agent hook's fast path is C (make test sets CGO_ENABLED=1)")
	}
	dir := t.TempDir()
	s := &fastPathSite{dir: dir, bin: filepath.Join(dir, "northstar-agent-hook"), sock: filepath.Join(dir, "agent.sock"),
		config: filepath.Join(dir, "config.toml"), ran: filepath.Join(dir, "ran")}
	// As make build links it: the fast path is C.
	if out, err := exec.Command("../../scripts/build-cgo.sh", "northstar-agent-hook", s.bin).CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-cgo.sh: %v\n%s", err, out)
	}
	script := "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > " + s.ran + "\ncat >> " + s.ran + "\n"
	if err := os.WriteFile(filepath.Join(dir, "northstar-hook"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, []byte(fmt.Sprintf("# the agent\n[agent]\nsocket = %q # here\n", s.sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	t.Cleanup(func() { ln.Close() })
	go s.serve()
	return s
}

// serve records each request and answers it with s.answer.
func (s *fastPathSite) serve() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		buf := make([]byte, hookstart.MaxRequest+1)
		n, err := c.Read(buf)
		if err == nil && n > 0 && buf[0] == hookstart.Op {
			req, derr := hookstart.Decode(buf[1:n])
			s.mu.Lock()
			s.got = append(s.got, req)
			answer, silent := s.answer, s.silent
			s.mu.Unlock()
			if silent {
				defer c.Close() // when the listener closes
				continue
			}
			if derr == nil && answer != nil {
				c.Write(answer)
			}
		}
		c.Close()
	}
}

func (s *fastPathSite) setAnswer(a []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer, s.got = a, nil
}

func (s *fastPathSite) requests() []hookstart.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

type run struct {
	stderr string
	err    error
}

// hook runs the hook as a runtime does: the state on stdin, args after
// argv[0], env added to the test's.
func (s *fastPathSite) hook(t *testing.T, state []byte, dir string, env []string, args ...string) run {
	t.Helper()
	os.Remove(s.ran)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(state)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stdout.Len() != 0 {
		t.Errorf("the hook printed %q on stdout", stdout.String())
	}
	return run{stderr.String(), err}
}

// hookRan returns how northstar-hook ran: its argv and the state it read;
// nil when it did not.
func (s *fastPathSite) hookRan(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(s.ran)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")
}

// TestFastPath: the C fast path sends the agent the config's absolute
// path, the runtime's pid and the state it read, whichever form of
// --config names the config, and exits with the agent's answer: 0 when it
// served the start, 1 with its error on one line.
func TestFastPath(t *testing.T) {
	s := newFastPathSite(t)
	state := []byte(`{"ociVersion":"1.2.0","id":"ctr-1","pid":4242,"bundle":"/b"}`)
	want := hookstart.Request{Config: s.config, Parent: os.Getpid(), State: state}
	rel, err := filepath.Rel(s.dir, s.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dir string
		env, args []string
	}{
		{"--config", "/", nil, []string{"--config", s.config}},
		{"-config=", "/", nil, []string{"-config=" + s.config}},
		{"relative --config", s.dir, nil, []string{"--config", rel}},
		{"NORTHSTAR_CONFIG", "/", []string{"NORTHSTAR_CONFIG=" + s.config}, nil},
		{"--host-wide", "/", nil, []string{"--config", s.config, "--host-wide"}},
	} {
		s.setAnswer(hookstart.Answer(true, nil))
		if c.name == "--host-wide" && os.Geteuid() != 0 {
			continue // not served to a rootless user: TestFastPathLeavesToGo
		}
		r := s.hook(t, state, c.dir, c.env, c.args...)
		if r.err != nil || r.stderr != "" {
			t.Errorf("%s: served start: %v, stderr %q", c.name, r.err, r.stderr)
		}
		if got := s.requests(); len(got) != 1 || got[0].Config != want.Config || got[0].Parent != want.Parent || !bytes.Equal(got[0].State, want.State) {
			t.Errorf("%s: the agent was asked %+v, want %+v", c.name, got, want)
		}
		if s.hookRan(t) != nil {
			t.Errorf("%s: a served start ran northstar-hook", c.name)
		}
	}

	s.setAnswer(hookstart.Answer(true, errors.New("policy: container ctr-1 is revoked")))
	if r := s.hook(t, state, "/", nil, "--config", s.config); r.err == nil || r.stderr != "northstar-agent-hook: policy: container ctr-1 is revoked\n" {
		t.Errorf("a failed start: %v, stderr %q", r.err, r.stderr)
	}
	s.setAnswer([]byte("?"))
	if r := s.hook(t, state, "/", nil, "--config", s.config); r.err == nil || r.stderr != "northstar-agent-hook: the agent at "+s.sock+" gave a malformed answer\n" {
		t.Errorf("a malformed answer: %v, stderr %q", r.err, r.stderr)
	}
	// An error longer than the Go hook reads: cut where it cuts it.
	long := strings.Repeat("x", 20<<10)
	s.setAnswer(hookstart.Answer(true, errors.New(long)))
	if r := s.hook(t, state, "/", nil, "--config", s.config); r.err == nil || r.stderr != "northstar-agent-hook: "+long[:hookstart.MaxAnswer-1]+"\n" {
		t.Errorf("a long error: %v, stderr of %d bytes", r.err, len(r.stderr))
	}
}

// TestFastPathAgentSilent: an agent that took the request and never
// answers fails the start after the Go hook's timeout, on one line.
func TestFastPathAgentSilent(t *testing.T) {
	s := newFastPathSite(t)
	s.setAnswer(nil)
	s.mu.Lock()
	s.silent = true
	s.mu.Unlock()
	start := time.Now()
	r := s.hook(t, []byte("{}"), "/", nil, "--config", s.config)
	if took := time.Since(start); r.err == nil || r.stderr != "northstar-agent-hook: the agent at "+s.sock+" gave no answer: Resource temporarily unavailable\n" || took < 5*time.Second || took > 8*time.Second {
		t.Errorf("a silent agent: %v after %v, stderr %q", r.err, took, r.stderr)
	}
	if s.hookRan(t) != nil {
		t.Error("a silent agent: northstar-hook ran")
	}
}

// TestFastPathLeavesToGo: whatever the fast path does not serve is the Go
// hook's, with the state it read given back on stdin: an agent that does
// not serve the start or closes unanswered, or none (the Go hook becomes
// northstar-hook without asking again), an argument the C does not read
// or a host-wide hook file run by a rootless user (the Go hook decides),
// a state too long (it refuses it). Where the agent does not serve,
// northstar-hook gets the state whole.
func TestFastPathLeavesToGo(t *testing.T) {
	s := newFastPathSite(t)
	state := bytes.Repeat([]byte("s"), 60<<10)
	becameHook := func(name string, args []string) {
		t.Helper()
		ran := s.hookRan(t)
		want := append([]string{filepath.Join(s.dir, "northstar-hook")}, args...)
		if len(ran) != len(want)+1 || strings.Join(ran[:len(want)], " ") != strings.Join(want, " ") || ran[len(want)] != string(state) {
			t.Errorf("%s: northstar-hook ran as %.200q, want %q and the state", name, ran, want)
		}
	}
	args := []string{"--config", s.config}
	for name, c := range map[string]struct {
		answer []byte
		asked  int
	}{
		"not served":        {hookstart.Answer(false, errors.New("another config")), 1},
		"closed unanswered": {nil, 1},
		// Longer than the Go hook reads: cut, as it cuts it.
		"a long not served": {append([]byte{'n'}, bytes.Repeat([]byte("x"), 20<<10)...), 1},
	} {
		s.setAnswer(c.answer)
		if r := s.hook(t, state, "/", nil, args...); r.err != nil {
			t.Errorf("%s: %v\n%s", name, r.err, r.stderr)
		}
		if got := s.requests(); len(got) != c.asked || !bytes.Equal(got[0].State, state) {
			t.Errorf("%s: the agent was asked %d times, want %d (by the C only)", name, len(got), c.asked)
		}
		becameHook(name, args)
	}

	// Arguments the C does not read: the Go hook's flag set decides (it
	// asks the agent only for --host-wide=true), and the agent's "not
	// served" makes it northstar-hook.
	for name, c := range map[string]struct {
		args  []string
		asked int
	}{
		"an unknown flag":  {[]string{"--config", s.config, "--bogus"}, 0},
		"an argument":      {[]string{"--config", s.config, "extra"}, 0},
		"--host-wide=true": {[]string{"--config", s.config, "--host-wide=true"}, 1},
	} {
		if c.asked != 0 && os.Geteuid() != 0 {
			continue // the Go hook does not ask for a rootless user
		}
		s.setAnswer(hookstart.Answer(false, errors.New("another config")))
		if r := s.hook(t, state, "/", nil, c.args...); r.err != nil {
			t.Errorf("%s: %v\n%s", name, r.err, r.stderr)
		}
		if got := s.requests(); len(got) != c.asked {
			t.Errorf("%s: the agent was asked %d times, want %d (the Go hook's)", name, len(got), c.asked)
		}
		becameHook(name, c.args)
	}

	noAgent := filepath.Join(s.dir, "no-agent.toml")
	if err := os.WriteFile(noAgent, []byte("[agent]\nsocket = \""+filepath.Join(s.dir, "nothing.sock")+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := s.hook(t, state, "/", nil, "--config", noAgent); r.err != nil {
		t.Errorf("no agent: %v\n%s", r.err, r.stderr)
	}
	becameHook("no agent", []string{"--config", noAgent})

	// A host-wide hook file run by a rootless user (here uid 65534): the
	// Go hook does not ask the agent for it, and neither does the C.
	if os.Geteuid() == 0 {
		for _, p := range []string{s.dir, filepath.Dir(s.dir)} {
			if err := os.Chmod(p, 0o777); err != nil {
				t.Fatal(err)
			}
		}
		s.setAnswer(hookstart.Answer(true, nil))
		os.Remove(s.ran)
		cmd := exec.Command(s.bin, "--config", s.config, "--host-wide")
		cmd.Dir, cmd.Stdin = "/", bytes.NewReader(state)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("a rootless user's host-wide hook: %v\n%s", err, out)
		}
		if got := s.requests(); len(got) != 0 {
			t.Errorf("a rootless user's host-wide hook: the agent was asked %d times", len(got))
		}
		becameHook("a rootless user's host-wide hook", []string{"--config", s.config, "--host-wide"})
	}

	// Longer than the Go hook reads: its error, and nothing asked.
	s.setAnswer(hookstart.Answer(true, nil))
	if r := s.hook(t, bytes.Repeat([]byte("s"), 64<<10+1), "/", nil, args...); r.err == nil || !strings.HasPrefix(r.stderr, "northstar-agent-hook: read state: ") || s.hookRan(t) != nil {
		t.Errorf("a state too long: %v, stderr %q", r.err, r.stderr)
	}
	if got := s.requests(); len(got) != 0 {
		t.Errorf("a state too long: the agent was asked %d times", len(got))
	}
}
