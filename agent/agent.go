// SPDX-License-Identifier: Apache-2.0

// Package agent is the per-host daemon (`northstarctl agent`, DESIGN.md §8,
// §9): it holds the unsealed lifecycle secret in a sealed, mlocked memfd
// and hands it to the hook over its control socket (package control), so
// that a container start does not need the TPM; it follows rotations; and
// with the API on it gives every container its own identity and API socket
// (package registry, and below it api, token, keys and audit).
//
// It unseals in child processes of its own (InChild, KeyInChild), whose
// heaps, where go-tpm leaves decrypted buffers, die with them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/internal/dirwatch"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

// poll is how often the agent re-reads the stored record when no change
// of the state directory woke it: a rotation is written by a rename, which
// inotify reports at once, and the poll is for what it misses.
const poll = time.Second

// Options are what Run needs.
type Options struct {
	Socket string       // the control socket ([agent] socket)
	Store  *store.Store // the lifecycle secret
	Unseal Unsealer     // how to unseal (InChild for a long-lived agent)
	Log    io.Writer    // progress lines; never a secret
	// Live turns on live rotation (DESIGN.md §12, [rotation] live): the
	// agent builds the secret filesystem of every container the hook
	// registers and rewrites it at every rotation, keeping the one before
	// for Grace.
	Live  bool
	Grace time.Duration
	// API, when set, turns on the per-container API (DESIGN.md §9,
	// [api] enable): the agent serves each container its own socket.
	API *registry.APIOptions
	// Ready, when set, is called once the control socket listens: what
	// sends containers the agent's way (the NRI plugin) starts then, not
	// before the agent can serve their hooks.
	Ready func()
	// OnRegistry, when set, is given the registry before Ready is
	// called (the NRI plugin delivers through it: registry.Prepare).
	OnRegistry func(*registry.Containers)
	// Starts, when set, makes what serves the starts of
	// northstar-agent-hook whole (control.Starter) from the registry and
	// the held secret: package hook/served, which runs the hook's code,
	// handed in by northstarctl (the agent does not import the hook).
	Starts func(reg *registry.Containers, secret control.Source) (control.Starter, error)
	// ShimStarts, when set, makes what serves the containerd shim's
	// starts whole (control.ShimStarter) from the registry: package
	// shim/served, handed in by northstarctl.
	ShimStarts func(reg *registry.Containers) (control.ShimStarter, error)
}

// withStarts is the control socket's Registrar that also serves the
// starts of the agent hook and of the shim.
type withStarts struct {
	*registry.Containers
	control.Starter
	shim control.ShimStarter // nil: none served
}

func (w withStarts) ServeShimStart(ctx context.Context, req shimstart.Request) (string, bool, error) {
	if w.shim == nil {
		return "", false, errors.New("this agent serves no shim starts")
	}
	return w.shim.ServeShimStart(ctx, req)
}

// Run is the agent: it unseals the current secret (with opts.Unseal) into
// a sealed, mlocked memfd, serves it on opts.Socket until ctx ends, and
// follows rotations; with opts.Live or opts.API it registers containers.
func Run(ctx context.Context, opts Options) error {
	if err := harden(); err != nil {
		return err
	}
	h := &held{unseal: opts.Unseal, store: opts.Store, log: opts.Log}
	defer h.close()
	if _, err := h.load(ctx); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	// The directory first, where the registry keeps the containers'
	// directories; the socket last, so that whoever waits for it (a test,
	// a script, systemd) finds the running containers served again.
	if err := control.MakeDir(opts.Socket); err != nil {
		return err
	}
	var reg control.Registrar
	if opts.API != nil || opts.Live {
		r, err := registry.Open(ctx, registry.Options{Dir: control.ContainersDir(opts.Socket), Store: opts.Store,
			Live: opts.Live, Secret: h, Grace: opts.Grace, API: opts.API, Log: opts.Log},
			func() uint64 { return h.current().Generation })
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		defer r.Close()
		if !r.RootLocked() {
			fmt.Fprintln(opts.Log, "agent: warning: cannot mlock the root key (RLIMIT_MEMLOCK is used up), so it may be swapped out; raise the limit ('ulimit -l', or LimitMEMLOCK= for a systemd unit)")
		}
		reg = r
		if opts.Starts != nil {
			s, err := opts.Starts(r, h.source)
			if err != nil {
				return err
			}
			w := withStarts{Containers: r, Starter: s}
			if opts.ShimStarts != nil {
				if w.shim, err = opts.ShimStarts(r); err != nil {
					return err
				}
			}
			reg = w
		}
		h.setOnLoad(r)
		if opts.OnRegistry != nil {
			opts.OnRegistry(r)
		}
	}
	ln, err := control.Listen(opts.Socket)
	if err != nil {
		return err
	}
	go h.watch(ctx)
	if opts.Ready != nil {
		opts.Ready()
	}
	fmt.Fprintf(opts.Log, "agent: serving generation %d on %s\n", h.current().Generation, opts.Socket)
	if err := control.Serve(ctx, ln, h.source, reg); err != nil {
		return err
	}
	// Serve closed the listener, which unlinks the socket; make sure.
	if err := os.Remove(opts.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove socket: %w", err)
	}
	return nil
}

// held is the agent's current secret: a sealed memfd and its record's id.
type held struct {
	unseal Unsealer
	store  *store.Store
	log    io.Writer

	// loadMu serializes loads (the watch, a registration that finds the
	// agent stale) and their rotations.
	loadMu  sync.Mutex
	lastErr string // of the last failed load, said once; guarded by loadMu

	mu     sync.Mutex // guards memfd, unlock, id, onLoad
	memfd  *os.File
	unlock func()
	id     control.RecordID
	onLoad rotation // may be nil
}

// rotation is what a rotation runs besides the load (the registry):
// Revoke with the new record's revocations before its secret is loaded
// (and even if it cannot be: what a revocation cuts off waits for
// nothing), Rotated after.
type rotation interface {
	Revoke(revs []store.Revocation)
	Rotated(id, prev control.RecordID)
}

func (h *held) setOnLoad(r rotation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onLoad = r
}

// load unseals the current secret and swaps it in; it returns the id it
// replaced.
func (h *held) load(ctx context.Context) (prev control.RecordID, err error) {
	memfd, id, err := h.unseal(ctx)
	if err != nil {
		return prev, err
	}
	unlock := mlockMemfd(memfd)
	h.mu.Lock()
	old, oldUnlock := h.memfd, h.unlock
	prev = h.id
	h.memfd, h.unlock, h.id = memfd, unlock, id
	h.mu.Unlock()
	if old != nil {
		oldUnlock()
		old.Close()
	}
	return prev, nil
}

// catchUp loads the secret the store holds now if it is not the one held,
// and runs the rotation to it. It reports whether the agent holds the
// store's secret afterwards.
func (h *held) catchUp(ctx context.Context) error {
	h.loadMu.Lock()
	defer h.loadMu.Unlock()
	rec, err := h.store.Current()
	if err != nil {
		return h.report(err)
	}
	if control.IDOf(rec) == h.current() {
		return nil
	}
	h.mu.Lock()
	onLoad := h.onLoad
	h.mu.Unlock()
	if onLoad != nil {
		onLoad.Revoke(rec.Revoked)
	}
	prev, err := h.load(ctx)
	if err != nil {
		return h.report(fmt.Errorf("unseal generation %d: %w", rec.Generation, err))
	}
	h.lastErr = ""
	id := h.current()
	fmt.Fprintf(h.log, "agent: serving generation %d\n", id.Generation)
	if onLoad != nil {
		onLoad.Rotated(id, prev)
	}
	if id != control.IDOf(rec) {
		return fmt.Errorf("the store changed again while generation %d was unsealed", id.Generation)
	}
	return nil
}

// report says err once (a TPM that is down would say it every second).
// The caller holds loadMu.
func (h *held) report(err error) error {
	if msg := err.Error(); msg != h.lastErr {
		fmt.Fprintf(h.log, "agent: %s\n", msg)
		h.lastErr = msg
	}
	return err
}

// Current implements registry.Secret: the store's secret, caught up to.
func (h *held) Current(ctx context.Context) (*os.File, control.RecordID, error) {
	if err := h.catchUp(ctx); err != nil {
		return nil, control.RecordID{}, err
	}
	return h.source()
}

// Held implements registry.Secret.
func (h *held) Held() (*os.File, control.RecordID, error) { return h.source() }

// mlockMemfd keeps the memfd's page out of swap for as long as the agent
// holds it, by locking a read-only shared mapping of it (memfd pages are
// shmem: MFD_* flags alone do not lock them). Best effort: a low
// RLIMIT_MEMLOCK only loses the swap protection, which tmpfs-backed memfds
// lack anyway on hosts without swap.
func mlockMemfd(f *os.File) (unlock func()) {
	m, err := unix.Mmap(int(f.Fd()), 0, secretfs.HexSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return func() {}
	}
	// Out of core dumps as well (core dumps are off, see harden; this
	// holds should they be turned on again).
	_ = unix.Madvise(m, unix.MADV_DONTDUMP)
	if err := unix.Mlock(m); err != nil {
		_ = unix.Munmap(m)
		return func() {}
	}
	return func() { _ = unix.Munmap(m) }
}

// source is the Source Serve sends: a duplicate of the current memfd, so a
// swap never closes a file that is being sent.
func (h *held) source() (*os.File, control.RecordID, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.memfd == nil {
		return nil, control.RecordID{}, errors.New("no secret held")
	}
	fd, err := unix.FcntlInt(h.memfd.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, control.RecordID{}, fmt.Errorf("dup memfd: %w", err)
	}
	return os.NewFile(uintptr(fd), h.memfd.Name()), h.id, nil
}

func (h *held) current() control.RecordID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.id
}

// watch follows rotations: when the stored record changes (another blob,
// whatever its generation) it unseals the new secret and runs the
// rotation. While that fails (TPM down, PCRs changed) the old one stays
// served; the hook ignores it because its generation is stale. The state
// directory is watched with inotify (a rotation renames the record into
// place), and polled every second for what that misses.
func (h *held) watch(ctx context.Context) {
	// A new record is renamed into the state directory; nil (never
	// receives) without inotify, and the poll below still sees it.
	changed, _ := dirwatch.Watch(ctx, h.store.Dir(), unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case _, ok := <-changed:
			if !ok { // closed as ctx ends
				return
			}
		}
		_ = h.catchUp(ctx)
	}
}

func (h *held) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.memfd != nil {
		h.unlock()
		h.memfd.Close()
		h.memfd = nil
	}
}
