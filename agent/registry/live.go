// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/live"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
	"golang.org/x/sys/unix"
)

// Live rotation (DESIGN.md §12): the agent builds the secret filesystem of
// every container it registers (package live) and rewrites it at every
// rotation.

// deliver builds s's secret filesystem from the secret in force and
// returns the reply with its view. It returns holding liveMu (unlock
// releases it), so that s is listed before any rotation runs.
func (c *Containers) deliver(s *registration, o control.Owner, withAPI bool) (control.Reply, func(), error) {
	// The hook waits control.RegisterTimeout for the answer, no longer.
	ctx, cancel := context.WithTimeout(context.Background(), control.RegisterTimeout)
	defer cancel()
	for {
		memfd, id, err := c.secret.Current(ctx)
		if err != nil {
			return control.Reply{}, nil, fmt.Errorf("the agent's secret: %w", err)
		}
		c.liveMu.Lock()
		c.mu.Lock()
		current := c.current
		c.mu.Unlock()
		if id.Generation != current {
			if ctx.Err() != nil {
				c.liveMu.Unlock()
				memfd.Close()
				return control.Reply{}, nil, fmt.Errorf("the agent's secret: generation %d is still being rotated to", id.Generation)
			}
			// The agent loaded a newer secret whose rotation has not run
			// yet (or this one is older than the last rotation's): ask
			// again, after it.
			c.liveMu.Unlock()
			memfd.Close()
			time.Sleep(5 * time.Millisecond)
			continue
		}
		content, err := readSecret(memfd)
		memfd.Close()
		if err != nil {
			c.liveMu.Unlock()
			return control.Reply{}, nil, err
		}
		fs, view, err := live.Deliver(content, ownerOf(o), withAPI)
		secretfs.Zero(content)
		if err != nil {
			c.liveMu.Unlock()
			return control.Reply{}, nil, fmt.Errorf("build the secret's filesystem: %w", err)
		}
		s.fs = fs
		s.Secret = &o
		s.setHolds(id)
		s.MountID, s.Follows, s.Why = fs.MountID(), true, ""
		return control.Reply{Record: id, View: view.File()}, c.liveMu.Unlock, nil
	}
}

// Revoke cuts off, at once, the containers revs revokes that are not cut
// off yet (northstarctl rotate --revoke): the agent calls it with the
// revocations of a new record before it serves that record's generation,
// so that a revoked container's API can neither mint a token nor fetch an
// SVID of the new generation, and before the rotation's deliveries, which
// a revocation must not wait behind.
func (c *Containers) Revoke(revs []store.Revocation) {
	if len(revs) == 0 {
		return
	}
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	var todo []*registration
	for _, s := range c.byKey {
		if !s.Revoked && revokedBy(s, revs) {
			todo = append(todo, s)
		}
	}
	c.mu.Unlock()
	if closed || len(todo) == 0 {
		return
	}
	for _, s := range todo {
		c.revoke(s, revs)
	}
	_ = c.save()
}

// Rotated delivers the new lifecycle secret, memfd of record id, to every
// container that follows, each keeping the one it had as secret.previous
// for the grace period, unless a container revoked since could know it;
// the containers a revocation names lose both instead (Revoke ran
// before; this catches those registered meanwhile). prev is the record
// before.
func (c *Containers) Rotated(id, prev control.RecordID) {
	c.mu.Lock()
	c.prev = prev.Generation
	c.mu.Unlock()
	_ = c.Audit("lifecycle-rotated", map[string]string{"generation": strconv.FormatUint(id.Generation, 10)})
	if c.secret != nil {
		c.liveMu.Lock()
		c.mu.Lock()
		c.current = id.Generation
		c.mu.Unlock()
		c.rotateAll(id)
		c.liveMu.Unlock()
	}
	// After the revocations: a revoked container's open X.509-SVID
	// streams are closed by now, and get no SVID of the new generation.
	if c.api != nil && c.api.gens != nil {
		c.api.gens.Set(id.Generation)
	}
}

// catchUp brings every container an earlier agent left behind to the
// generation in force (a restart; an agent killed mid-rotation).
func (c *Containers) catchUp(ctx context.Context) {
	if c.secret == nil {
		return
	}
	memfd, id, err := c.secret.Current(ctx)
	if err != nil {
		fmt.Fprintf(c.log, "agent: cannot catch the containers up: %v\n", err)
		return
	}
	memfd.Close()
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	c.current = id.Generation
	c.mu.Unlock()
	c.rotateAll(id)
}

// rotateAll writes the secret of id to every container that follows and
// does not have it yet, and revokes those the store's record revokes. The
// caller holds liveMu.
//
// The revocations are the newest record's, whichever record id is: each
// record carries those before it, so a rotation the store has already
// passed (a plain rotate right after a revoking one) still cuts off whom
// the revoking one named. When they cannot be read, nothing is delivered:
// a revoked container must not get the new secret.
func (c *Containers) rotateAll(id control.RecordID) {
	if c.isClosed() {
		return
	}
	fail := func(err error) { fmt.Fprintf(c.log, "agent: rotation to generation %d: %v\n", id.Generation, err) }
	var revs []store.Revocation
	if c.store != nil {
		rec, err := c.store.Current()
		if err != nil {
			fail(fmt.Errorf("read the revocations: %w", err))
			return
		}
		revs = rec.Revoked
	}
	// What the agent holds, without catching up (that would run a
	// rotation of its own): a newer secret brings its own rotation.
	memfd, got, err := c.secret.Held()
	if err != nil || got != id {
		if err == nil {
			memfd.Close()
			err = fmt.Errorf("the agent holds generation %d by now", got.Generation)
		}
		fail(err)
		return
	}
	current, err := readSecret(memfd)
	memfd.Close()
	if err != nil {
		fail(err)
		return
	}
	defer secretfs.Zero(current)

	c.mu.Lock()
	var todo []*registration
	for _, s := range c.byKey {
		switch {
		case s.Revoked:
		case revokedBy(s, revs):
			todo = append(todo, s)
		case s.fs != nil && s.holds() != id:
			todo = append(todo, s)
		}
	}
	c.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	// Each container on its own: one that fails (deleted meanwhile, a
	// full filesystem) stops nobody else's. A few at a time: each is a
	// handful of system calls on a tmpfs.
	work := make(chan *registration)
	var wg sync.WaitGroup
	var kept sync.Once
	for range min(8, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				if revokedBy(s, revs) {
					c.revoke(s, revs)
					continue
				}
				if c.rotateOne(s, id, current, revs) {
					kept.Do(func() {
						c.mu.Lock()
						c.dropAt = time.Now().Add(c.grace)
						c.mu.Unlock()
					})
				}
			}
		}()
	}
	for _, s := range todo {
		work <- s
	}
	close(work)
	wg.Wait()
	_ = c.save()
}

// rotateOne writes current (of record id) to s's filesystem, with what s
// had as the one before for the grace period, unless a container revoked
// since s got it could know it (a revocation after that generation): then
// none, and any there goes. It reports whether it kept one.
func (c *Containers) rotateOne(s *registration, id control.RecordID, current []byte, revs []store.Revocation) (kept bool) {
	c.mu.Lock()
	fs, had := s.fs, s.Generation
	c.mu.Unlock()
	if fs == nil {
		return false
	}
	keep := c.grace > 0
	for _, r := range revs {
		if r.Generation > had {
			keep = false
		}
	}
	var prev []byte
	if !keep {
		_ = fs.DropPrevious()
	} else {
		p, err := fs.Current()
		if err == nil && p != nil && string(p) != string(current) {
			prev = p
			defer secretfs.Zero(p)
		}
	}
	err := fs.Rotate(current, prev)
	if errors.Is(err, live.ErrClosed) {
		return false // gone, lost or revoked meanwhile
	}
	if err != nil {
		c.lost(s, fmt.Sprintf("the rotation to generation %d failed: %v", id.Generation, err))
		return false
	}
	c.mu.Lock()
	s.setHolds(id)
	c.mu.Unlock()
	return prev != nil
}

// revokedBy reports whether revs revokes s: its container id, registered
// before the rotation that named it (a container started since with the
// same id is another container).
func revokedBy(s *registration, revs []store.Revocation) bool {
	for _, r := range revs {
		if r.ID == s.ID && s.Since < r.Generation {
			return true
		}
	}
	return false
}

// revoke cuts s off: its secret and the one before it go at once, its API
// socket closes, and the tokens its identity minted before the revoking
// generation stop verifying.
func (c *Containers) revoke(s *registration, revs []store.Revocation) {
	var gen uint64
	for _, r := range revs {
		if r.ID == s.ID {
			gen = max(gen, r.Generation)
		}
	}
	c.mu.Lock()
	fs, srv, wl := s.fs, s.srv, s.wl
	s.fs, s.srv, s.wl = nil, nil, nil
	s.Revoked, s.Follows, s.Why = true, false, "revoked"
	if prev, ok := c.revoked[s.Identity]; !ok || prev.Generation < gen {
		c.revoked[s.Identity] = revokedSender{Generation: gen, Until: time.Now().Add(api.MaxTTL)}
	}
	c.mu.Unlock()
	if fs != nil {
		if err := fs.Revoke(); err != nil {
			fmt.Fprintf(c.log, "agent: revoke container %s: %v\n", s.ID, err)
		}
		fs.Close()
	}
	if srv != nil {
		srv.Close()
		_ = removeSocket(c.dirOf(s.Registration), "api.sock")
	}
	if wl != nil {
		wl.Close()
		_ = removeSocket(c.dirOf(s.Registration), spiffe.SocketName)
	}
	_ = c.Audit("container-revoked", map[string]string{"id": s.ID, "identity": s.Identity, "pid": strconv.Itoa(s.Pid), "generation": strconv.FormatUint(gen, 10)})
	fmt.Fprintf(c.log, "agent: container %s (%s) revoked: its secret removed, its API closed\n", s.ID, s.Identity)
}

// removeSocket removes the socket name in dir (a revoked container's).
func removeSocket(dir, name string) error {
	return unix.Unlink(filepath.Join(dir, name))
}

// lost marks s as one rotations no longer reach, and says so once.
func (c *Containers) lost(s *registration, why string) {
	c.mu.Lock()
	fs := s.fs
	s.fs, s.Follows, s.Why = nil, false, why
	c.mu.Unlock()
	if fs != nil {
		fs.Close()
	}
	fmt.Fprintf(c.log, "agent: container %s (%s) no longer follows rotations: %s\n", s.ID, s.Identity, why)
}

// takeBack reacquires the filesystem of s, restored from registry.json.
func (c *Containers) takeBack(s *registration) {
	if s.Secret == nil || s.Revoked || !s.Follows {
		return
	}
	if c.secret == nil {
		s.Follows, s.Why = false, "the agent runs without live rotation now ([rotation] live)"
		return
	}
	fs, err := reacquire(s)
	if err != nil {
		why := "the agent lost its handle after a restart: " + err.Error()
		if errors.Is(err, live.ErrNotOurs) {
			why = "the container's " + secretfs.Dir + " is no longer the mount northstar gave it"
		}
		s.Follows, s.Why = false, why
		fmt.Fprintf(c.log, "agent: container %s (%s) no longer follows rotations: %s\n", s.ID, s.Identity, why)
		return
	}
	s.fs = fs
}

// reacquireTimeout bounds taking one container's filesystem back: the
// path is resolved in the container's mount namespace, where a container
// may have put a FUSE mount that never answers.
const reacquireTimeout = 2 * time.Second

// reacquire is live.Reacquire for s, given up on after reacquireTimeout
// (the thread that hangs stays in the container's namespace until the
// call returns; the handle it may still get is let go).
func reacquire(s *registration) (*live.FS, error) {
	// Its own pidfd: s's may be closed while the call hangs.
	pidfd, err := unix.FcntlInt(uintptr(s.pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup pidfd: %w", err)
	}
	type result struct {
		fs  *live.FS
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer unix.Close(pidfd)
		fs, err := live.Reacquire(pidfd, s.MountID, ownerOf(*s.Secret))
		done <- result{fs, err}
	}()
	select {
	case r := <-done:
		return r.fs, r.err
	case <-time.After(reacquireTimeout):
		go func() {
			if r := <-done; r.fs != nil {
				r.fs.Close()
			}
		}()
		return nil, fmt.Errorf("opening %s in the container did not finish in %v", secretfs.Dir, reacquireTimeout)
	}
}

// dropPrevious removes secret.previous from every container once the
// grace period of the last rotation is over. Under liveMu: a rotation
// that runs meanwhile writes a secret.previous of its own, which must stay.
func (c *Containers) dropPrevious() {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	due := !c.dropAt.IsZero() && !time.Now().Before(c.dropAt)
	if due {
		c.dropAt = time.Time{}
	}
	var fss []*live.FS
	for _, s := range c.byKey {
		if due && s.fs != nil {
			fss = append(fss, s.fs)
		}
	}
	for id, r := range c.revoked {
		if time.Now().After(r.Until) {
			delete(c.revoked, id)
		}
	}
	c.mu.Unlock()
	for _, fs := range fss {
		_ = fs.DropPrevious()
	}
}

// RevokedSender reports whether tokens sender minted in generation are
// revoked.
func (c *Containers) RevokedSender(sender string, generation uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.revoked[sender]
	return ok && generation < r.Generation
}
