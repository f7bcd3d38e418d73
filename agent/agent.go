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
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

// poll is how often the agent re-reads the stored record: a small file
// read, so a rotation reaches the agent within about a second. Until then
// the hook sees a stale generation (see control.FetchCurrent) and unseals
// from the TPM itself.
const poll = time.Second

// Options are what Run needs.
type Options struct {
	Socket string       // the control socket ([agent] socket)
	Store  *store.Store // the lifecycle secret
	Unseal Unsealer     // how to unseal (InChild for a long-lived agent)
	Log    io.Writer    // progress lines; never a secret
	// API, when set, turns on the per-container API (DESIGN.md §9,
	// [api] enable): the agent registers the containers the hook sends
	// and serves each its own socket.
	API *registry.Options
	// Ready, when set, is called once the control socket listens: what
	// sends containers the agent's way (the NRI plugin) starts then, not
	// before the agent can serve their hooks.
	Ready func()
}

// Run is the agent: it unseals the current secret (with opts.Unseal) into
// a sealed, mlocked memfd, serves it on opts.Socket until ctx ends, and
// follows rotations; with opts.API it also registers containers.
func Run(ctx context.Context, opts Options) error {
	if err := harden(); err != nil {
		return err
	}
	h := &held{unseal: opts.Unseal}
	defer h.close()
	if err := h.load(ctx); err != nil {
		return fmt.Errorf("unseal: %w", err)
	}
	// The directory first, where the registry keeps the containers'
	// directories; the socket last, so that whoever waits for it (a test,
	// a script, systemd) finds the running containers served again.
	if err := control.MakeDir(opts.Socket); err != nil {
		return err
	}
	var reg control.Registrar
	if opts.API != nil {
		r, err := registry.Open(ctx, *opts.API, func() uint64 { return h.current().Generation })
		if err != nil {
			return fmt.Errorf("api: %w", err)
		}
		defer r.Close()
		if !r.RootLocked() {
			fmt.Fprintln(opts.Log, "agent: warning: cannot mlock the root key (RLIMIT_MEMLOCK is used up), so it may be swapped out; raise the limit ('ulimit -l', or LimitMEMLOCK= for a systemd unit)")
		}
		reg = r
		h.onLoad = func(id, prev control.RecordID) { r.Rotated(id.Generation, prev.Generation) }
	}
	ln, err := control.Listen(opts.Socket)
	if err != nil {
		return err
	}
	go h.watch(ctx, opts.Store, opts.Log)
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
	onLoad func(id, prev control.RecordID) // after a rotation was loaded; may be nil

	mu     sync.Mutex // guards memfd, unlock, id
	memfd  *os.File
	unlock func()
	id     control.RecordID
}

// load unseals the current secret and swaps it in.
func (h *held) load(ctx context.Context) error {
	memfd, id, err := h.unseal(ctx)
	if err != nil {
		return err
	}
	unlock := mlockMemfd(memfd)
	h.mu.Lock()
	old, oldUnlock := h.memfd, h.unlock
	h.memfd, h.unlock, h.id = memfd, unlock, id
	h.mu.Unlock()
	if old != nil {
		oldUnlock()
		old.Close()
	}
	return nil
}

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
// whatever its generation) it unseals the new secret. While that fails (TPM down, PCRs changed) the old one
// stays served; the hook ignores it because its generation is stale.
func (h *held) watch(ctx context.Context, st *store.Store, log io.Writer) {
	t := time.NewTicker(poll)
	defer t.Stop()
	lastErr := ""
	report := func(err error) {
		if msg := err.Error(); msg != lastErr {
			fmt.Fprintf(log, "agent: %s\n", msg)
			lastErr = msg
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rec, err := st.Current()
		if err != nil {
			report(err)
			continue
		}
		prev := h.current()
		if control.IDOf(rec) == prev {
			continue
		}
		if err := h.load(ctx); err != nil {
			report(fmt.Errorf("unseal generation %d: %w", rec.Generation, err))
			continue
		}
		lastErr = ""
		fmt.Fprintf(log, "agent: serving generation %d\n", h.current().Generation)
		if h.onLoad != nil {
			h.onLoad(h.current(), prev)
		}
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
