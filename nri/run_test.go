// SPDX-License-Identifier: Apache-2.0

package nri

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// runtime is NRI's own runtime side (what containerd links), in this
// process, on a socket of the test's: the plugin's round trips are real
// ttrpc over a unix socket, without a containerd. The plugin reaches it
// through a proxy at sock, so that stop can close the plugin's
// connection as a runtime that exits does (an Adaptation stopped in
// process leaves its plugins' connections open).
type runtime struct {
	dir, sock string
	r         *adaptation.Adaptation
	proxy     net.Listener
	mu        sync.Mutex
	conns     []net.Conn
}

func (rt *runtime) real() string { return rt.sock + ".real" }

// serveProxy accepts plugin connections at sock and pipes each to the
// runtime's real socket.
func (rt *runtime) serveProxy(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("unix", rt.sock)
	if err != nil {
		t.Fatal(err)
	}
	rt.proxy = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("unix", rt.real())
			if err != nil {
				c.Close()
				continue
			}
			rt.mu.Lock()
			rt.conns = append(rt.conns, c, r)
			rt.mu.Unlock()
			go func() { io.Copy(r, c); r.Close() }()
			go func() { io.Copy(c, r); c.Close() }()
		}
	}()
}

func newRuntime(t *testing.T) *runtime {
	t.Helper()
	dir, err := os.MkdirTemp("", "nsnri-") // short: a unix socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rt := &runtime{dir: dir, sock: filepath.Join(dir, "nri.sock")}
	rt.start(t)
	t.Cleanup(rt.stop)
	return rt
}

func (rt *runtime) start(t *testing.T) {
	t.Helper()
	sync := func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, nil, nil)
		return err
	}
	update := func(context.Context, []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
		return nil, nil
	}
	r, err := adaptation.New("test-runtime", "v0", sync, update,
		adaptation.WithSocketPath(rt.real()),
		adaptation.WithPluginPath(filepath.Join(rt.dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(rt.dir, "conf.d")))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	rt.r = r
	rt.serveProxy(t)
}

// stop ends the runtime as an exiting process would: no listener, every
// plugin connection closed.
func (rt *runtime) stop() {
	if rt.r == nil {
		return
	}
	rt.proxy.Close()
	rt.mu.Lock()
	for _, c := range rt.conns {
		c.Close()
	}
	rt.conns = nil
	rt.mu.Unlock()
	rt.r.Stop()
	rt.r = nil
}

// create asks the runtime's plugins about one container and returns the
// hooks they added at createRuntime.
func (rt *runtime) create(t *testing.T, name string) int {
	t.Helper()
	rsp, err := rt.r.CreateContainer(context.Background(), &adaptation.CreateContainerRequest{
		Pod:       testPod(nil),
		Container: testContainer(name, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(rsp.GetAdjust().GetHooks().GetCreateRuntime())
}

// waitRegistered creates containers until the plugin adds its hook.
func (rt *runtime) waitRegistered(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rt.create(t, "probe") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the plugin did not register within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunServesRotatesAndReconnects: the plugin registers with a real NRI
// runtime and answers far inside NRI's 2 s request timeout; it is told
// the runtime's pid on every connection, before it registers; when the
// runtime goes away and comes back it reconnects by itself.
func TestRunServesRotatesAndReconnects(t *testing.T) {
	rt := newRuntime(t)
	var mu sync.Mutex
	var rotations []int
	log := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Socket: rt.sock, Hook: testHook, Log: log,
			Rotate: func(_ context.Context, pid int) error {
				mu.Lock()
				defer mu.Unlock()
				rotations = append(rotations, pid)
				return nil
			}})
	}()
	rt.waitRegistered(t)

	// The answer time, as the runtime sees it (the runtime's whole
	// CreateContainer: its ttrpc round trip to the plugin included).
	const n = 200
	times := make([]time.Duration, n)
	for i := range times {
		start := time.Now()
		if rt.create(t, "app") != 1 {
			t.Fatal("a container without the hook")
		}
		times[i] = time.Since(start)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	p50, p99 := times[n/2], times[n*99/100]
	t.Logf("CreateContainer through NRI: p50 %v, p99 %v, max %v", p50, p99, times[n-1])
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 answer %v: want far inside NRI's 2 s timeout (<= 100 ms)", p99)
	}

	// The runtime restarts: the connection closes, the plugin comes back.
	rt.stop()
	rt.start(t)
	rt.waitRegistered(t)
	mu.Lock()
	got := append([]int(nil), rotations...)
	mu.Unlock()
	if len(got) != 2 || got[0] != os.Getpid() || got[1] != os.Getpid() {
		t.Errorf("Rotate called with %v, want this process's pid (the runtime's) once per connection, twice", got)
	}
	if !strings.Contains(log.String(), "the runtime closed the connection") {
		t.Errorf("the lost connection was not logged:\n%s", log)
	}
	if c := strings.Count(log.String(), "registered with the runtime"); c != 2 {
		t.Errorf("%d registrations logged, want 2:\n%s", c, log)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestRunDoesNotRegisterWhenRotationFails: a rotation that fails keeps
// the plugin away (with required_plugins, pods fail closed) and is
// retried; the log says why once, not at every attempt.
func TestRunDoesNotRegisterWhenRotationFails(t *testing.T) {
	rt := newRuntime(t)
	var mu sync.Mutex
	attempts := 0
	log := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, Options{Socket: rt.sock, Hook: testHook, Log: log,
		Rotate: func(context.Context, int) error {
			mu.Lock()
			defer mu.Unlock()
			attempts++
			if attempts < 4 {
				return errors.New("TPM unreachable")
			}
			return nil
		}})
	time.Sleep(150 * time.Millisecond)
	mu.Lock()
	early := attempts
	mu.Unlock()
	if early < 1 || early >= 4 {
		t.Fatalf("%d attempts after 150 ms", early)
	}
	if rt.create(t, "app") != 0 {
		t.Fatal("the plugin served although its rotation failed")
	}
	rt.waitRegistered(t)
	if c := strings.Count(log.String(), "TPM unreachable"); c != 1 {
		t.Errorf("the failure logged %d times, want once:\n%s", c, log)
	}
}

// TestRunWaitsForTheSocket: no runtime yet, one line; the plugin
// registers as soon as one listens.
func TestRunWaitsForTheSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "nsnri-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rt := &runtime{dir: dir, sock: filepath.Join(dir, "nri.sock")}
	log := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, Options{Socket: rt.sock, Hook: testHook, Log: log})
	time.Sleep(300 * time.Millisecond)
	if c := strings.Count(log.String(), "no such file or directory"); c != 1 {
		t.Errorf("waiting logged %d times, want once:\n%s", c, log)
	}
	rt.start(t)
	defer rt.stop()
	rt.waitRegistered(t)
}
