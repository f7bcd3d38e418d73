// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestMain doubles as northstarctl in the agent's unseal child: the agent
// runs its own executable (here, the test binary) to unseal, and marks the
// child's environment (agent.ChildEnv).
func TestMain(m *testing.M) {
	if os.Getenv(agent.ChildEnv) != "" {
		if err := Run(context.Background(), &Env{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "northstarctl: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func newConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n", filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func ctl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = Run(context.Background(), &Env{Stdout: &o, Stderr: &e}, args)
	return o.String(), e.String(), err
}

func TestInitRotateStatus(t *testing.T) {
	cfgPath := newConfig(t)
	if out, _, err := ctl(t, "init", "--config", cfgPath); err != nil || !strings.Contains(out, "initialized") {
		t.Fatalf("init: %q %v", out, err)
	}
	if out, _, err := ctl(t, "init", "--config", cfgPath); err != nil || !strings.Contains(out, "already initialized") {
		t.Fatalf("second init: %q %v", out, err)
	}
	if _, _, err := ctl(t, "rotate", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	out, _, err := ctl(t, "status", "--json", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var s Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if s.Generation != 2 || s.Sealer != "host" || !strings.Contains(s.Protection, "no TPM") {
		t.Errorf("status = %+v", s)
	}
	cfg, _ := config.Load(cfgPath)
	st, _ := configured.Store(cfg)
	sec, _, err := st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hex := string(sec.AppendHex(nil))
	text, _, _ := ctl(t, "status", "--config", cfgPath)
	if strings.Contains(out, hex) || strings.Contains(text, hex) {
		t.Error("status prints the secret")
	}
}

func TestExitCodesAndHelp(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"init", "--bogus"}, {"status", "extra"}, {"config"}, {"config", "docker"}} {
		if _, _, err := ctl(t, args...); !errors.Is(err, ErrUsage) {
			t.Errorf("%v: err = %v, want a usage error (exit 2)", args, err)
		}
	}
	for _, args := range [][]string{{"--help"}, {"init", "--help"}, {"rotate", "-h"}, {"status", "--help"}, {"doctor", "--help"}, {"config", "--help"}} {
		if out, _, err := ctl(t, args...); err != nil || !strings.Contains(out, "Usage: northstarctl") {
			t.Errorf("%v: %v, output %q", args, err, out)
		}
	}
	// Failures that are not usage errors (exit 1) name the fix.
	missing := filepath.Join(t.TempDir(), "none.toml")
	if _, _, err := ctl(t, "status", "--config", missing); err == nil || errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), missing) {
		t.Errorf("status with a missing config: %v", err)
	}
	cfgPath := newConfig(t)
	if _, _, err := ctl(t, "status", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "northstarctl init") {
		t.Errorf("status before init: %v, want it to name 'northstarctl init'", err)
	}
}

func TestConfigSnippets(t *testing.T) {
	cfgPath := newConfig(t)
	for _, target := range []string{"hooks-d", "runc"} {
		out, _, err := ctl(t, "config", target, "--config", cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("config %s: stdout is not JSON: %v\n%s", target, err, out)
		}
		if !strings.Contains(out, cfgPath) || !strings.Contains(out, "northstar-hook") {
			t.Errorf("config %s does not name the hook and the config path:\n%s", target, out)
		}
	}
	for version, table := range map[string]string{
		"2": `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.northstar]`,
		"3": `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.northstar]`,
	} {
		out, _, err := ctl(t, "config", "containerd", "--config", cfgPath, "--config-version", version)
		if err != nil || !strings.Contains(out, "\n"+table+"\n  runtime_type = \"io.containerd.northstar.v2\"\n") || !strings.Contains(out, cfgPath) {
			t.Errorf("config containerd --config-version %s: %v\n%s", version, err, out)
		}
	}
	if _, _, err := ctl(t, "config", "containerd", "--config-version", "4"); !errors.Is(err, ErrUsage) {
		t.Errorf("--config-version 4: %v, want a usage error", err)
	}
}

func TestDoctor(t *testing.T) {
	cfgPath := newConfig(t)
	out, _, err := ctl(t, "doctor", "--config", cfgPath)
	if err == nil || !strings.Contains(out, "northstarctl init") {
		t.Errorf("doctor before init: %v, want a FAIL naming 'northstarctl init'\n%s", err, out)
	}
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	out, _, err = ctl(t, "doctor", "--config", cfgPath)
	if err != nil {
		t.Errorf("doctor after init: %v\n%s", err, out)
	}
	if !strings.Contains(out, "memfd sealing") || !strings.Contains(out, "unseals") {
		t.Errorf("doctor output:\n%s", out)
	}
}

// TestAgent runs `northstarctl agent` in-process: it serves the current
// generation, follows a rotation, and removes its socket when stopped.
func TestAgent(t *testing.T) {
	cfgPath := newConfig(t)
	sock := filepath.Join(filepath.Dir(cfgPath), "agent", "agent.sock")
	if _, _, err := ctl(t, "agent", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "[agent] socket is not set") {
		t.Errorf("agent without a socket configured: %v", err)
	}
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[agent]\nsocket = %q\n", sock)
	f.Close()
	if _, _, err := ctl(t, "agent", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "northstarctl init") {
		t.Errorf("agent before init: %v, want it to name 'northstarctl init'", err)
	}
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, &Env{Stdout: &out, Stderr: &out}, []string{"agent", "--config", cfgPath}) }()
	waitFor(t, func() bool { return strings.Contains(out.String(), "serving generation 1 on "+sock) })
	if gen := fetchGeneration(t, sock); gen != 1 {
		t.Errorf("agent serves generation %d, want 1", gen)
	}
	if _, _, err := ctl(t, "rotate", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return fetchGeneration(t, sock) == 2 })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v\n%s", err, out.String())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestAgentWithSPIFFE: with [spiffe] trust_domain the agent starts, its
// key child unseals (making it the first time) the CA's seed, which the
// store keeps sealed, and a restarted agent unseals the same one.
func TestAgentWithSPIFFE(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent", "agent.sock")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n[spiffe]\ntrust_domain = \"example.org\"\n",
		filepath.Join(dir, "state"), sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(dir, "state", spiffe.KeyName+".key.json")
	var first []byte
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		var out testenv.SyncBuffer
		done := make(chan error, 1)
		go func() { done <- Run(ctx, &Env{Stdout: &out, Stderr: &out}, []string{"agent", "--config", cfgPath}) }()
		waitFor(t, func() bool { return strings.Contains(out.String(), "serving generation 1 on "+sock) })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("agent: %v\n%s", err, out.String())
		}
		data, err := os.ReadFile(seed)
		if err != nil {
			t.Fatalf("after agent start %d: %v", i+1, err)
		}
		if i == 0 {
			first = data
		} else if !bytes.Equal(data, first) {
			t.Error("a restarted agent made a new CA seed")
		}
	}
}

func fetchGeneration(t *testing.T, sock string) uint64 {
	t.Helper()
	f, gen, err := control.Fetch(context.Background(), sock)
	if err != nil {
		t.Fatalf("fetch from the agent: %v", err)
	}
	f.Close()
	return gen.Generation
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRemediesNameTheCommand: failures a command fixes say which.
func TestRemediesNameTheCommand(t *testing.T) {
	cfgPath := newConfig(t)
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(filepath.Dir(cfgPath), "state")
	// The host key is gone: nothing can unseal the stored secret.
	if err := os.Remove(filepath.Join(state, "host.key")); err != nil {
		t.Fatal(err)
	}
	out, _, err := ctl(t, "doctor", "--config", cfgPath)
	if err == nil || !strings.Contains(out, "FAIL  unseal:") || !strings.Contains(out, "fix: run 'northstarctl rotate'") {
		t.Errorf("doctor without the host key: %v\n%s", err, out)
	}
	if _, _, err := ctl(t, "rotate", "--config", cfgPath); err != nil {
		t.Fatalf("rotate is the way out: %v", err)
	}
	if out, _, err := ctl(t, "doctor", "--config", cfgPath); err != nil {
		t.Errorf("doctor after rotate: %v\n%s", err, out)
	}
	// A corrupt record.
	if err := os.WriteFile(filepath.Join(state, "secret.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ctl(t, "status", "--config", cfgPath); err == nil || !strings.HasSuffix(err.Error(), "; run 'northstarctl rotate'") {
		t.Errorf("status of a corrupt record: %v", err)
	}
}

func TestDoctorWarnsAboutReachableTPMPaths(t *testing.T) {
	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"tcp:127.0.0.1:2321":                  "a TCP port is reachable by every local process",
		"unix:" + filepath.Join(open, "sock"): "has mode 0755",
	} {
		var lines []string
		cfg := config.Default()
		cfg.TPM.Path = path
		checkTPMPath(cfg, func(level, what, fix string) { lines = append(lines, level+" "+what+" fix: "+fix) })
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "warn ") || !strings.Contains(lines[0], want) {
			t.Errorf("%s: doctor said %q, want a warning containing %q", path, lines, want)
		}
	}
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.TPM.Path = "unix:" + filepath.Join(private, "sock")
	checkTPMPath(cfg, func(level, what, _ string) { t.Errorf("a 0700 socket directory got %s %s", level, what) })
}

// TestFlagsAnywhere: --config before the subcommand and flags after the
// config target work, as users of ctr, podman and kubectl expect (issue 9,
// point 10: both were usage errors).
func TestFlagsAnywhere(t *testing.T) {
	cfgPath := newConfig(t)
	for _, args := range [][]string{
		{"--config", cfgPath, "init"},
		{"--config=" + cfgPath, "status"},
		{"status", "--config", cfgPath, "--json"},
		{"--config", cfgPath, "status", "--json"},
		{"config", "--config", cfgPath, "hooks-d"},
		{"config", "hooks-d", "--config", cfgPath},
		{"--config", cfgPath, "config", "runc"},
	} {
		if out, _, err := ctl(t, args...); err != nil {
			t.Errorf("northstarctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, _, err := ctl(t, "config", "--config", cfgPath, "hooks-d")
	if err != nil || !strings.Contains(out, cfgPath) {
		t.Errorf("config --config X hooks-d did not use X: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"--bogus", "init"},
		{"--config"},
		{"--config", cfgPath},
		{"config", "runc", "hooks-d"},
		{"status", "--config", cfgPath, "extra"},
	} {
		if _, _, err := ctl(t, args...); !errors.Is(err, ErrUsage) {
			t.Errorf("northstarctl %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	if out, _, err := ctl(t, "--config", cfgPath, "--help"); err != nil || !strings.Contains(out, "Usage: northstarctl") {
		t.Errorf("--config X --help: %v\n%s", err, out)
	}
}

// TestAuditVerifyAgainstTheRecordedHead: `northstarctl rotate` records the
// audit log's head, and `audit verify` then names a cut below it; lines
// after it are the documented limit.
func TestAuditVerifyAgainstTheRecordedHead(t *testing.T) {
	ctx := context.Background()
	cfgPath := newConfig(t)
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := configured.Store(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key, err := st.Key(ctx, registry.AuditKeyName, 32)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(cfg.StateDir, audit.FileName)
	appendN := func(n int) {
		w, err := audit.Open(log, key, auditLimits(cfg), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if err := w.Append("token-issued", map[string]string{"token_id": fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
	}
	appendN(4)
	if out, _, err := ctl(t, "audit", "verify", "--config", cfgPath); err != nil || !strings.Contains(out, "no recorded head checked") {
		t.Fatalf("verify before any rotation: %q %v", out, err)
	}
	if _, _, err := ctl(t, "rotate", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	appendN(2) // after the rotation: lines 5 and 6
	if out, _, err := ctl(t, "audit", "verify", "--config", cfgPath); err != nil || !strings.Contains(out, "chain and MACs intact") || !strings.Contains(out, "generation 2 (line 4)") {
		t.Fatalf("verify of an intact log: %q %v", out, err)
	}
	cut := func(n int) {
		data, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(data), "\n")
		if err := os.WriteFile(log, []byte(strings.Join(lines[:n], "")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cut(4) // the lines after the head: not detectable, as documented
	if out, _, err := ctl(t, "audit", "verify", "--config", cfgPath); err != nil {
		t.Fatalf("verify of a log cut to its head: %q %v", out, err)
	}
	cut(3)
	_, _, err = ctl(t, "audit", "verify", "--config", cfgPath)
	if err == nil || !strings.Contains(err.Error(), "ends at line 3, but the head recorded at the rotation to generation 2 is line 4") {
		t.Fatalf("verify of a log cut below its head: %v", err)
	}
	t.Log(err)
	// Cut and written on: the head's line is another one.
	appendN(3)
	if _, _, err = ctl(t, "audit", "verify", "--config", cfgPath); !errors.Is(err, audit.ErrHeadMismatch) {
		t.Fatalf("verify of a log cut and written on: %v, want ErrHeadMismatch", err)
	}
	// Deleted: reported as cut, not as a missing file.
	if err := os.Rename(log, log+".gone"); err != nil {
		t.Fatal(err)
	}
	if _, _, err = ctl(t, "audit", "verify", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "is gone, but the head recorded at the rotation to generation 2 is line 4") {
		t.Fatalf("verify of a deleted log: %v", err)
	}
	if err := os.Rename(log+".gone", log); err != nil {
		t.Fatal(err)
	}
	// reset: the log moves aside, the head goes, verify passes on the new
	// (empty, then written) log.
	out, _, err := ctl(t, "audit", "reset", "--config", cfgPath)
	if err != nil || !strings.Contains(out, "moved the audit log to "+filepath.Join(cfg.StateDir, "audit-")) {
		t.Fatalf("audit reset: %q %v", out, err)
	}
	appendN(2)
	if out, _, err := ctl(t, "audit", "verify", "--config", cfgPath); err != nil || !strings.Contains(out, "2 lines, chain and MACs intact") {
		t.Fatalf("verify after a reset: %q %v", out, err)
	}
}

// TestAuditResetRefusesARunningAgent: the agent keeps writing into the file
// it opened; a reset beside it would lose those lines. The agent's writer
// holds the log's lock for as long as it runs.
func TestAuditResetRefusesARunningAgent(t *testing.T) {
	cfgPath := newConfig(t)
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{1}, 32)
	w, err := audit.Open(filepath.Join(cfg.StateDir, audit.FileName), key, audit.Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ctl(t, "audit", "reset", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("audit reset beside a running agent: %v", err)
	}
	w.Close()
	if out, _, err := ctl(t, "audit", "reset", "--config", cfgPath); err != nil {
		t.Fatalf("audit reset once the agent stopped: %q %v", out, err)
	}
}

// TestConfigRuncRootless: the plain rootless runc snippet has the hook at
// createContainer, and at createRuntime too when the config enables the
// API (the createRuntime hook registers, the createContainer hook mounts).
func TestConfigRuncRootless(t *testing.T) {
	stages := func(cfgPath string, extra ...string) []string {
		t.Helper()
		out, _, err := ctl(t, append([]string{"config", "runc", "--config", cfgPath}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Hooks map[string][]json.RawMessage }
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		var got []string
		for s, hs := range doc.Hooks {
			if len(hs) != 1 {
				t.Errorf("%s: %d hooks", s, len(hs))
			}
			got = append(got, s)
		}
		slices.Sort(got)
		return got
	}
	plain := newConfig(t)
	api := filepath.Join(t.TempDir(), "api.toml")
	if err := os.WriteFile(api, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[agent]\nsocket = \"/run/a/agent.sock\"\n[api]\nenable = true\n", t.TempDir())), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg   string
		extra []string
		want  []string
	}{
		{plain, nil, []string{"createRuntime"}},
		{plain, []string{"--rootless"}, []string{"createContainer"}},
		{api, []string{"--rootless"}, []string{"createContainer", "createRuntime"}},
		{api, nil, []string{"createRuntime"}},
	} {
		if got := stages(c.cfg, c.extra...); !slices.Equal(got, c.want) {
			t.Errorf("config runc %v with %s: stages %v, want %v", c.extra, filepath.Base(c.cfg), got, c.want)
		}
	}
}

// TestDoctorChecksTheAgent: with [api] enable, doctor fails while no
// agent answers (API containers cannot start then) and names the fix; it
// passes once one does.
func TestDoctorChecksTheAgent(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent", "agent.sock")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n", filepath.Join(dir, "state"), sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ctl(t, "init", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	out, _, err := ctl(t, "doctor", "--config", cfgPath)
	if err == nil || !strings.Contains(out, "FAIL  agent at "+sock) || !strings.Contains(out, "start 'northstarctl agent'") {
		t.Fatalf("doctor with the agent down: %v\n%s", err, out)
	}
	if !strings.Contains(out, "ok    agent peer checks") {
		t.Errorf("doctor did not check the kernel's peer checks on this 6.11+ kernel:\n%s", out)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unixpacket", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if out, _, err := ctl(t, "doctor", "--config", cfgPath); !strings.Contains(out, "ok    agent at "+sock+" accepts connections") {
		t.Fatalf("doctor with an agent answering: %v\n%s", err, out)
	}
}
