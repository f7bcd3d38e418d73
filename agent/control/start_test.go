// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
)

// blockingStarts serves starts whole; a start of config "/block" waits
// until release is closed.
type blockingStarts struct {
	release chan struct{}
	started chan struct{}
}

func (b *blockingStarts) Register(Request, *os.File) (Reply, error) {
	return Reply{}, errors.New("not here")
}

func (b *blockingStarts) ServeStart(ctx context.Context, req hookstart.Request) (bool, error) {
	if req.Config == "/block" {
		close(b.started)
		<-b.release
	}
	if req.Config == "/other" {
		return false, errors.New("another config")
	}
	return true, nil
}

// TestStartsServedAtOnce: a start the agent serves whole that stalls (a
// hung filesystem under a container's rootfs) does not hold the next
// start, as one connection at a time would; answers keep their kinds.
func TestStartsServedAtOnce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	b := &blockingStarts{release: make(chan struct{}), started: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, nil, b) }()
	state := []byte(`{"ociVersion":"1.0.2","id":"c","pid":2,"bundle":"/b"}`)
	blocked := make(chan error, 1)
	go func() {
		blocked <- hookstart.Ask(sock, hookstart.Request{Config: "/block", Parent: 1, State: state}, 10*time.Second)
	}()
	select {
	case <-b.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first start did not reach the agent")
	}
	if err := hookstart.Ask(sock, hookstart.Request{Config: "/fast", Parent: 1, State: state}, 2*time.Second); err != nil {
		t.Errorf("a start behind a stalled one: %v, want it served", err)
	}
	if err := hookstart.Ask(sock, hookstart.Request{Config: "/other", Parent: 1, State: state}, 2*time.Second); !errors.Is(err, hookstart.ErrNotServed) {
		t.Errorf("a start the agent does not serve: %v, want ErrNotServed", err)
	}
	close(b.release)
	if err := <-blocked; err != nil {
		t.Errorf("the stalled start, released: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// shimStarts serves shim starts, failing those of bundle "/fail".
type shimStarts struct{ blockingStarts }

func (shimStarts) ServeShimStart(ctx context.Context, req shimstart.Request) (string, bool, error) {
	if req.Bundle == "/fail" {
		return "", true, errors.New("container c1 is revoked")
	}
	return "/usr/bin/containerd-shim-runc-v2", true, nil
}

// TestServeShimStart: the agent answers a shim start only for a request
// that names its asker's own parent; a malformed request, another parent
// or an agent that serves none are "not served" (nothing was done: the Go
// wrapper starts the container).
func TestServeShimStart(t *testing.T) {
	ask := func(reg Registrar, req []byte) string {
		t.Helper()
		sock := filepath.Join(t.TempDir(), "agent.sock")
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		client, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		if err := serveShimStart(server, req[1:], reg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := client.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	req := shimstart.Request{Config: "/etc/northstar/config.toml", Bundle: "/run/b/c1", ID: "c1", Parent: os.Getppid()}
	starts := &shimStarts{}
	if got := ask(starts, req.Encode()); got != "y/usr/bin/containerd-shim-runc-v2" {
		t.Errorf("served start answered %q", got)
	}
	failing := req
	failing.Bundle = "/fail"
	if got := ask(starts, failing.Encode()); got != "econtainer c1 is revoked" {
		t.Errorf("failed start answered %q", got)
	}
	other := req
	other.Parent = 1
	if got := ask(starts, other.Encode()); !strings.HasPrefix(got, "nthe shim start names parent 1, not its asker's") {
		t.Errorf("another parent answered %q", got)
	}
	if got := ask(starts, []byte("W/etc/x\x00relative\x00c1\x001\x00")); !strings.HasPrefix(got, "nmalformed") {
		t.Errorf("a malformed request answered %q", got)
	}
	if got := ask(&starts.blockingStarts, req.Encode()); !strings.HasPrefix(got, "nthis agent serves no shim starts") {
		t.Errorf("an agent serving none answered %q", got)
	}
}
