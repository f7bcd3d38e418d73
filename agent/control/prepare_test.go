// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// preparer answers prepare requests from its fields.
// preparer answers with reply and err and keeps the request it got,
// under mu: the socket orders the exchange, which the race detector does
// not see.
type preparer struct {
	mu    sync.Mutex
	got   PrepareRequest
	reply PrepareReply
	err   error
}

func (p *preparer) set(reply PrepareReply, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reply, p.err = reply, err
}

func (p *preparer) request() PrepareRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got
}

func (p *preparer) Register(Request, *os.File) (Reply, error) {
	return Reply{}, errors.New("no registrations here")
}

func (p *preparer) PrepareBundle(req PrepareRequest) (PrepareReply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	want := PrepareReply{SecretDir: "/a/.prepared-1-secret", APIDir: "/a/.prepared-1"}
	got, err := Prepare(context.Background(), sock, req)
	if err != nil || got != want {
		t.Fatalf("Prepare = %+v, %v", got, err)
	}
	if g := p.request(); g.ID != "c1" || g.Bundle != req.Bundle || *g.Secret != *req.Secret || *g.Pod != *req.Pod || !g.API {
		t.Errorf("the agent got %+v", g)
	}
	p.set(want, errors.New("container c1 is revoked"))
	if _, err := Prepare(context.Background(), sock, req); err == nil || err.Error() != "container c1 is revoked" || errors.Is(err, ErrNoAgent) {
		t.Errorf("Prepare with the agent refusing = %v", err)
	}
	p.set(PrepareReply{}, nil)
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
