// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
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
