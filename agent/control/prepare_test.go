// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// preparer answers prepare requests from its fields.
type preparer struct {
	got   PrepareRequest
	reply PrepareReply
	err   error
}

func (p *preparer) Register(Request, *os.File) (Reply, error) {
	return Reply{}, errors.New("no registrations here")
}

func (p *preparer) PrepareBundle(req PrepareRequest) (PrepareReply, error) {
	p.got = req
	return p.reply, p.err
}

// TestPrepareRoundTrip: the shim's request reaches the agent's Preparer
// as sent, and its answer (the directories, or its error) comes back;
// no agent at all is ErrNoAgent, which the shim falls back to the hook
// on.
func TestPrepareRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agent")
	sock := filepath.Join(dir, "agent.sock")
	p := &preparer{reply: PrepareReply{SecretDir: "/a/.prepared-1-secret", APIDir: "/a/.prepared-1"}}
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, nil, p) }()
	defer func() {
		cancel()
		<-done
	}()

	req := PrepareRequest{ID: "c1", Identity: "web", Bundle: "/run/containerd/b/c1", Secret: &Owner{UID: 1, GID: 2, Mode: 0o400}, API: true,
		Pod: &Pod{Namespace: "ns", Name: "p", Container: "c"}}
	got, err := Prepare(context.Background(), sock, req)
	if err != nil || got != p.reply {
		t.Fatalf("Prepare = %+v, %v", got, err)
	}
	if p.got.ID != "c1" || p.got.Bundle != req.Bundle || *p.got.Secret != *req.Secret || *p.got.Pod != *req.Pod || !p.got.API {
		t.Errorf("the agent got %+v", p.got)
	}
	p.err = errors.New("container c1 is revoked")
	if _, err := Prepare(context.Background(), sock, req); err == nil || err.Error() != "container c1 is revoked" || errors.Is(err, ErrNoAgent) {
		t.Errorf("Prepare with the agent refusing = %v", err)
	}
	p.err, p.reply = nil, PrepareReply{}
	if _, err := Prepare(context.Background(), sock, req); err == nil || !strings.Contains(err.Error(), "no directory") {
		t.Errorf("Prepare answered with no directory = %v", err)
	}
	if _, err := Prepare(context.Background(), filepath.Join(dir, "none.sock"), req); !errors.Is(err, ErrNoAgent) {
		t.Errorf("Prepare without an agent = %v, want ErrNoAgent", err)
	}
}

func TestPrepareRequestCheck(t *testing.T) {
	ok := PrepareRequest{ID: "c1", Identity: "web", Bundle: "/b/c1"}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []PrepareRequest{
		{ID: "../c1", Identity: "web", Bundle: "/b/c1"},
		{ID: "c1", Identity: "", Bundle: "/b/c1"},
		{ID: "c1", Identity: "web", Bundle: "b/c1"},
		{ID: "c1", Identity: "web", Bundle: "/b/../c1"},
		{ID: "c1", Identity: "web", Bundle: "/b/c1", Pod: &Pod{Name: "p"}},
	} {
		if bad.Check() == nil {
			t.Errorf("%+v passed", bad)
		}
	}
}
