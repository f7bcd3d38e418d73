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
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/identity"
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
	c.noteRevocations(revs)
	if len(revs) == 0 {
		return
	}
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	todo := revocations(c.byKey, revs)
	c.mu.Unlock()
	if closed || len(todo) == 0 {
		return
	}
	for s, gen := range todo {
		c.revoke(s, gen)
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
	revoking := revocations(c.byKey, revs)
	var todo []*registration
	for _, s := range c.byKey {
		switch {
		case s.Revoked:
		case revoking[s] != 0:
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
				if gen := revoking[s]; gen != 0 {
					c.revoke(s, gen)
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

// revocations are the registrations of regs that revs revokes and that
// are not cut off yet, each with the revoking generation: those revs
// names (revokedBy), and with each every container that shares its PID
// namespace. Those could reach a revoked container's /run/northstar
// through /proc/<pid>/root, and it theirs (DESIGN.md §15): a group is
// revoked together. The caller holds c.mu.
func revocations(regs map[control.Registration]*registration, revs []store.Revocation) map[*registration]uint64 {
	out := map[*registration]uint64{}
	group := map[control.NS]uint64{}
	for _, s := range regs {
		if !revokedBy(s, revs) {
			continue
		}
		var gen uint64
		for _, r := range revs {
			if r.ID == s.ID {
				gen = max(gen, r.Generation)
			}
		}
		if !s.Revoked {
			out[s] = gen
		}
		if s.pidNS != (control.NS{}) && s.pidNS != hostPidNS {
			group[s.pidNS] = max(group[s.pidNS], gen)
		}
	}
	for _, s := range regs {
		if gen, ok := group[s.pidNS]; ok && !s.Revoked && s.pidNS != (control.NS{}) {
			out[s] = max(out[s], gen)
		}
	}
	return out
}

// hostPidNS is the agent's PID namespace: processes in it (the host's,
// hostPID containers') are no group of one another.
var hostPidNS, _ = control.SelfNS("pid")

// revoke cuts s off: its secret and the one before it go at once, its API
// socket closes, and the tokens its identity minted before the revoking
// generation gen stop verifying.
func (c *Containers) revoke(s *registration, gen uint64) {
	c.mu.Lock()
	fs, srv, wl := s.fs, s.srv, s.wl
	s.fs, s.srv, s.wl = nil, nil, nil
	s.Revoked, s.Follows, s.Why = true, false, "revoked"
	if prev, ok := c.revoked[s.Identity]; !ok || prev.Generation < gen {
		now := time.Now()
		c.revoked[s.Identity] = revokedSender{Generation: gen, Until: now.Add(c.revokedFor()), At: now}
	}
	c.mu.Unlock()
	// Recorded before anything is torn down: an agent that stops from
	// here on (or is killed) comes back with the container revoked.
	if err := c.save(); err != nil {
		fmt.Fprintf(c.log, "agent: record the revocation of container %s: %v (the store's record still names it)\n", s.ID, err)
	}
	if fs != nil {
		if err := fs.Revoke(); err != nil {
			fmt.Fprintf(c.log, "agent: revoke container %s: %v\n", s.ID, err)
		}
		fs.Close()
	}
	// The Workload API first: its Close returns once its handlers have,
	// and they count refusals into srv.
	if wl != nil {
		wl.Close()
		_ = removeSocket(c.dirOf(s.Registration), spiffe.SocketName)
	}
	if srv != nil {
		srv.Close()
		_ = removeSocket(c.dirOf(s.Registration), "api.sock")
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

// takeBackPending says whether s, restored from registry.json, has a
// filesystem to take back; if it cannot follow any more, it says why.
func (c *Containers) takeBackPending(s *registration) bool {
	if s.Secret == nil || s.Revoked || !s.Follows {
		return false
	}
	if c.secret == nil {
		s.Follows, s.Why = false, "the agent runs without live rotation now ([rotation] live)"
		return false
	}
	return true
}

// takeBackWorkers bound the take-backs that run at once, and
// takeBackWait how long a restart waits for them before it serves: a
// container whose mount tree hangs (a FUSE mount at /run that never
// answers) costs a worker for reacquireTimeout and the agent's start
// nothing beyond the wait.
const (
	takeBackWorkers = 4
	takeBackWait    = 500 * time.Millisecond
)

// takeBackAll reacquires the filesystems of pending, a few at a time, off
// the restart's path, then catches up the containers that missed
// rotations while the agent was down. It returns when that is done, or
// after takeBackWait, with the rest going on in the background (Close
// waits for it).
func (c *Containers) takeBackAll(ctx context.Context, pending []*registration) {
	finished := make(chan struct{})
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		defer close(finished)
		work := make(chan *registration)
		var wg sync.WaitGroup
		for range min(takeBackWorkers, len(pending)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range work {
					c.takeBack(s)
				}
			}()
		}
		for _, s := range pending {
			work <- s
		}
		close(work)
		wg.Wait()
		// Which ones follow, for the next agent and status.
		_ = c.save()
		// Those that missed rotations while the agent was down.
		c.catchUp(ctx)
	}()
	t := time.NewTimer(takeBackWait)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		// Some hang: the others taken back by now need not wait for
		// them to catch up.
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			c.catchUp(ctx)
		}()
	}
}

// takeBack reacquires the filesystem of s, restored from registry.json
// and served already: s is revoked, or gone, meanwhile, or not.
func (c *Containers) takeBack(s *registration) {
	fs, err := reacquire(s)
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	listed := c.byKey[s.Registration] == s && !c.closed
	revoked := s.Revoked
	switch {
	case err != nil:
		why := "the agent lost its handle after a restart: " + err.Error()
		if errors.Is(err, live.ErrNotOurs) {
			why = "the container's " + secretfs.Dir + " is no longer the mount northstar gave it"
		}
		s.Follows, s.Why = false, why
		c.mu.Unlock()
		fmt.Fprintf(c.log, "agent: container %s (%s) no longer follows rotations: %s\n", s.ID, s.Identity, why)
		return
	case listed && !revoked:
		s.fs = fs
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if listed && revoked {
		// Revoked while it was being taken back: its secret goes now.
		if err := fs.Revoke(); err != nil {
			fmt.Fprintf(c.log, "agent: revoke container %s: %v\n", s.ID, err)
		}
	}
	fs.Close()
}

// reacquireFS is live.Reacquire (tests make it hang).
var reacquireFS = live.Reacquire

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
		fs, err := reacquireFS(pidfd, s.MountID, ownerOf(*s.Secret))
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
	gen := c.gen()
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
		// Its tokens and JWT-SVIDs have expired, and its signatures (of
		// the generation before the revoking one) are rotated out.
		if time.Now().After(r.Until) && gen > r.Generation {
			delete(c.revoked, id)
		}
	}
	c.mu.Unlock()
	for _, fs := range fss {
		_ = fs.DropPrevious()
	}
}

// revokedFor is how long a revoked sender's tokens and JWT-SVIDs may
// still be presented.
func (c *Containers) revokedFor() time.Duration {
	d := api.MaxTTL
	if c.api != nil && c.api.spiffe != nil {
		d = max(d, c.api.spiffe.JWTTTL)
	}
	return d
}

// noteRevocations takes the revocations of the store's record: an id the
// agent saw revoked that the record no longer names was lifted
// (northstarctl revoke --lift), and the audit log says so.
func (c *Containers) noteRevocations(revs []store.Revocation) {
	now := map[string]bool{}
	for _, r := range revs {
		now[r.ID] = true
	}
	c.mu.Lock()
	var lifted []string
	for id := range c.revokedIDs {
		if !now[id] {
			lifted = append(lifted, id)
		}
	}
	changed := len(lifted) > 0 || len(now) != len(c.revokedIDs)
	c.revokedIDs = now
	c.mu.Unlock()
	for _, id := range lifted {
		_ = c.Audit("revocation-lifted", map[string]string{"id": id})
		fmt.Fprintf(c.log, "agent: the revocation of container %s was lifted\n", id)
	}
	if changed {
		_ = c.save()
	}
}

// checkNotRevoked refuses a registration of a container id the store's
// record revokes: the id stays revoked until the admin lifts it.
func (c *Containers) checkNotRevoked(id string) error {
	if c.store == nil {
		return nil
	}
	rec, err := c.store.Current()
	if err != nil {
		return fmt.Errorf("read the revocations: %w", err)
	}
	return rec.CheckNotRevoked(id)
}

// RevokedJWT reports whether a JWT-SVID for id issued at issued is of a
// revoked sender: one whose identity was revoked after it was issued.
func (c *Containers) RevokedJWT(id spiffeid.ID, issued time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ident, r := range c.revoked {
		if !issued.Before(r.At) {
			continue
		}
		if p, err := identity.SPIFFEPath(ident); err == nil && p == id.Path() {
			return true
		}
	}
	return false
}

// RevokedSender reports whether tokens sender minted in generation are
// revoked.
func (c *Containers) RevokedSender(sender string, generation uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.revoked[sender]
	return ok && generation < r.Generation
}
