// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/config/configtest"
)

const agentStartSpec = `{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"env":["PATH=/bin"]},` +
	`"root":{"path":"rootfs"},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}],` +
	`"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]%s}}`

// agentStartSite is a bundle, a runc shim to delegate to and a prepare
// that counts its calls.
type agentStartSite struct {
	bundle, delegate string
	prepared         int
	prepareErr       error
}

func newAgentStartSite(t *testing.T, spec string) *agentStartSite {
	t.Helper()
	s := &agentStartSite{bundle: t.TempDir(), delegate: filepath.Join(t.TempDir(), runcShim)}
	if err := os.WriteFile(s.delegate, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if spec != "" {
		if err := os.WriteFile(filepath.Join(s.bundle, "config.json"), []byte(spec), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *agentStartSite) prepare(req control.PrepareRequest) (control.PrepareReply, error) {
	s.prepared++
	return control.PrepareReply{SecretDir: "/run/northstar-agent/.prepared-x-secret"}, s.prepareErr
}

func (s *agentStartSite) start(t *testing.T, extra string) (string, bool, error, []byte) {
	t.Helper()
	cfg := configtest.Host(t, fmt.Sprintf("[agent]\nsocket = \"/run/northstar-agent/agent.sock\"\n[shim]\ndelegate = %q\n%s", s.delegate, extra))
	delegate, served, err := AgentStart(context.Background(), cfg, shimstart.Request{Config: cfg.Path, Bundle: s.bundle, ID: "c1", Parent: os.Getpid()}, s.prepare)
	after, _ := os.ReadFile(filepath.Join(s.bundle, "config.json"))
	return delegate, served, err, after
}

const manual = "[rotation]\non = \"manual\"\n"

// TestAgentStart: the agent serves a shim start the Go wrapper would give
// the agent's mounts: config.json gains them, keeps its mode, and the
// runc shim is the delegate; a failed prepare fails the start on one line
// and leaves config.json as it was.
func TestAgentStart(t *testing.T) {
	spec := fmt.Sprintf(agentStartSpec, "")
	s := newAgentStartSite(t, spec)
	delegate, served, err, after := s.start(t, manual)
	if err != nil || !served || delegate != s.delegate {
		t.Fatalf("AgentStart = %q, %v, %v; want the runc shim, served", delegate, served, err)
	}
	if s.prepared != 1 || !bytes.Contains(after, []byte(`"source":"/run/northstar-agent/.prepared-x-secret"`)) {
		t.Errorf("prepared %d times; config.json:\n%s", s.prepared, after)
	}
	if fi, err := os.Stat(filepath.Join(s.bundle, "config.json")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("config.json mode %v, %v; want 0640 kept", fi.Mode(), err)
	}

	s = newAgentStartSite(t, spec)
	s.prepareErr = errors.New("container c1 is revoked\nrun 'northstarctl revoke --lift c1'")
	_, served, err, after = s.start(t, manual)
	if !served || err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "agent: container c1 is revoked") || string(after) != spec {
		t.Errorf("a failed prepare: served %v, %v, config.json changed %v", served, err, string(after) != spec)
	}
}

// TestAgentStartLeavesToGo: whatever the Go wrapper would do otherwise
// than give the agent's mounts (the hook, a failure, a rotation that
// seals) is not served, and decided before anything changed: no prepare,
// config.json as containerd wrote it.
func TestAgentStartLeavesToGo(t *testing.T) {
	for _, c := range []struct {
		name, spec, extra string
		otherDelegate     bool
	}{
		{"a user namespace", fmt.Sprintf(strings.Replace(agentStartSpec, `{"type":"pid"}`, `{"type":"pid"},{"type":"user"}`, 1), ""), manual, false},
		{"no mount namespace", strings.Replace(fmt.Sprintf(agentStartSpec, ""), `{"type":"mount"},`, "", 1), manual, false},
		{"a shared root", fmt.Sprintf(agentStartSpec, `,"rootfsPropagation":"rshared"`), manual, false},
		{"no config.json", "", manual, false},
		{"config.json not JSON", "{", manual, false},
		{"another delegate", fmt.Sprintf(agentStartSpec, ""), manual, true},
		{"a rotation due (no record of this lifecycle)", fmt.Sprintf(agentStartSpec, ""), "", false},
	} {
		s := newAgentStartSite(t, c.spec)
		if c.otherDelegate {
			s.delegate = filepath.Join(filepath.Dir(s.delegate), "containerd-shim-other-v2")
			if err := os.WriteFile(s.delegate, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		_, served, err, after := s.start(t, c.extra)
		if served || err == nil || s.prepared != 0 || string(after) != c.spec {
			t.Errorf("%s: served %v, %v, prepared %d, config.json changed %v; want not served, and nothing done", c.name, served, err, s.prepared, string(after) != c.spec)
		}
	}
}
