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
	for {
		memfd, id, err := c.secret.Current(context.Background())
		if err != nil {
			return control.Reply{}, nil, fmt.Errorf("the agent's secret: %w", err)
		}
		c.liveMu.Lock()
		c.mu.Lock()
		current := c.current
		c.mu.Unlock()
		if id.Generation != current {
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
		s.Generation, s.MountID, s.Follows, s.Why = id.Generation, fs.MountID(), true, ""
		return control.Reply{Record: id, View: view.File()}, c.liveMu.Unlock, nil
	}
}

// Rotated delivers the new lifecycle secret, memfd of record id, to every
// container that follows, each keeping the one it had as secret.previous
// for the grace period; the containers the record revokes lose both
// instead (northstarctl rotate --revoke). prev is the generation before.
func (c *Containers) Rotated(id, prev control.RecordID) {
	c.mu.Lock()
	c.prev = prev.Generation
	c.mu.Unlock()
	_ = c.Audit("lifecycle-rotated", map[string]string{"generation": strconv.FormatUint(id.Generation, 10)})
	if c.api != nil && c.api.gens != nil {
		c.api.gens.Set(id.Generation) // open X.509-SVID streams get a new SVID
	}
	if c.secret == nil {
		return
	}
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	c.current = id.Generation
	c.mu.Unlock()
	c.rotateAll(id, c.revocations(id))
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
	c.rotateAll(id, c.revocations(id))
}

// revocations returns the revocations of the record id (nil when the store
// holds another record by now).
func (c *Containers) revocations(id control.RecordID) []store.Revocation {
	if c.store == nil {
		return nil
	}
	rec, err := c.store.Current()
	if err != nil || control.IDOf(rec) != id {
		return nil
	}
	return rec.Revoked
}

// rotateAll writes the secret of id to every container that follows and
// does not have it yet, and revokes those revs names. The caller holds
// liveMu.
func (c *Containers) rotateAll(id control.RecordID, revs []store.Revocation) {
	// What the agent holds, without catching up (that would run a
	// rotation of its own): a newer secret brings its own rotation.
	memfd, got, err := c.secret.Held()
	if err != nil || got != id {
		if err == nil {
			memfd.Close()
			err = fmt.Errorf("the agent holds generation %d by now", got.Generation)
		}
		fmt.Fprintf(c.log, "agent: rotation to generation %d: %v\n", id.Generation, err)
		return
	}
	current, err := readSecret(memfd)
	memfd.Close()
	if err != nil {
		fmt.Fprintf(c.log, "agent: rotation to generation %d: %v\n", id.Generation, err)
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
		case s.fs != nil && s.Generation != id.Generation:
			todo = append(todo, s)
		}
	}
	c.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	// A rotation that revokes keeps no secret before it anywhere: the
	// revoked container knew that one, and a server that takes the one
	// before during the grace period would let its copy in.
	keepPrevious := c.grace > 0
	for _, r := range revs {
		if r.Generation == id.Generation {
			keepPrevious = false
		}
	}
	// Each container on its own: one that fails (deleted meanwhile, a
	// full filesystem) stops nobody else's. A few at a time: each is a
	// handful of system calls on a tmpfs.
	work := make(chan *registration)
	var wg sync.WaitGroup
	for range min(8, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				if revokedBy(s, revs) {
					c.revoke(s, revs)
					continue
				}
				c.rotateOne(s, id, current, keepPrevious)
			}
		}()
	}
	for _, s := range todo {
		work <- s
	}
	close(work)
	wg.Wait()
	if keepPrevious {
		c.mu.Lock()
		c.dropAt = time.Now().Add(c.grace)
		c.mu.Unlock()
	}
	_ = c.save()
}

// rotateOne writes current (generation id) to s's filesystem, with what s
// had as the one before if keepPrevious (else none: any there goes).
func (c *Containers) rotateOne(s *registration, id control.RecordID, current []byte, keepPrevious bool) {
	c.mu.Lock()
	fs := s.fs
	c.mu.Unlock()
	if fs == nil {
		return
	}
	var prev []byte
	if !keepPrevious {
		_ = fs.DropPrevious()
	} else {
		p, err := fs.Current()
		if err == nil && p != nil && string(p) != string(current) {
			prev = p
			defer secretfs.Zero(p)
		}
	}
	if err := fs.Rotate(current, prev); err != nil {
		c.lost(s, fmt.Sprintf("the rotation to generation %d failed: %v", id.Generation, err))
		return
	}
	c.mu.Lock()
	s.Generation = id.Generation
	c.mu.Unlock()
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
	fs, err := live.Reacquire(s.pidfd, s.MountID, ownerOf(*s.Secret))
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

// dropPrevious removes secret.previous from every container once the
// grace period of the last rotation is over.
func (c *Containers) dropPrevious() {
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
