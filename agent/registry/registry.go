// SPDX-License-Identifier: Apache-2.0

// Package registry is the agent's side of the containers: every container
// the hook registers is kept here with what the agent gives it, its own
// API socket (DESIGN.md §9) and the filesystem of its secret, which the
// agent rewrites at every rotation (§12); the container's init process is
// watched through a pidfd, and the registrations are kept across agent
// restarts.
package registry

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/live"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/agent/spire"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
	"github.com/northstar-oci/northstar/store"
)

// Containers are the registered containers. A container with the API has
// a directory <containers>/<name> holding api.sock, which the hook
// bind-mounts read-only at /run/northstar/api in that container only: the
// socket a request arrives on is the caller's identity. A container whose
// secret the agent delivered has its filesystem kept here, rewritten at
// every rotation. When the container's init process is gone, so is all of
// it. Registrations are kept in <containers>/registry.json, so that a
// restarted agent serves the running containers again, and northstarctl
// status lists them.
//
// A registration's key is the container id, its init pid and that
// process's start time: ids repeat across runc roots, podman and
// containerd namespaces, and keyed by id alone a second container with a
// live id took the first one's directory (DESIGN.md §11). Each key has a
// directory of its own, which nothing else ever reuses.
type Containers struct {
	dir   string // <agent socket dir>/containers
	store *store.Store
	gen   func() uint64
	log   io.Writer
	watch *pidWatch

	// api is the per-container API, nil when [api] enable is off.
	api *apiState
	// secret is the lifecycle secret the agent holds; grace how long the
	// one before stays; nil secret when live rotation is off.
	secret Secret
	grace  time.Duration

	mu      sync.Mutex // guards byKey, revoked, revokedIDs, dropAt, current, prev, closed
	closed  bool       // by Close: nothing is saved or delivered after it
	byKey   map[control.Registration]*registration
	revoked map[string]revokedSender // identity -> tokens of earlier generations are revoked
	// revokedIDs are the container ids the store's record revokes, as the
	// agent last saw them (to audit lifts).
	revokedIDs map[string]bool
	dropAt     time.Time // when the containers' secret.previous goes (zero: nothing to drop)
	current    uint64    // the generation delivered to every container that follows
	prev       uint64    // the generation before it (0: none known)
	// prepared are containers the agent built mounts for, not bound to
	// a process yet (prepared.go), by container id.
	prepared map[string]*prepared
	// measurer records deliveries of the secret (measure.go); nil: none.
	measurer Measurer

	// liveMu orders deliveries: a registration's first delivery and a
	// rotation's never interleave, so no container is left behind on a
	// generation a rotation already passed.
	liveMu sync.Mutex

	saveMu  sync.Mutex // serializes save: a later snapshot is never overwritten by an earlier one
	journal *os.File   // registry.journal, open for appending (under saveMu)
	// journalLines counts the lines appended since the last fold (under
	// saveMu).
	journalLines int

	stop chan struct{} // ends the background work
	done sync.WaitGroup
}

var _ control.Registrar = (*Containers)(nil)

// Secret is the lifecycle secret the agent holds, as the registry sees it.
type Secret interface {
	// Current returns a duplicate of the sealed memfd of the secret the
	// store holds now, and its record: a stale agent catches up first (and
	// runs the rotation), so that no container is given a secret the store
	// has rotated out.
	Current(ctx context.Context) (*os.File, control.RecordID, error)
	// Held is Current without catching up.
	Held() (*os.File, control.RecordID, error)
}

// Entry is a registration as registry.json keeps it (and northstarctl
// status shows it).
type Entry struct {
	control.Registration
	API bool `json:"api,omitempty"`
	// Secret is the owner of the secret file, when the agent delivered it.
	Secret *control.Owner `json:"secret,omitempty"`
	// Since is the generation in force when the container registered.
	Since uint64 `json:"since"`
	// Generation is the generation the container holds (with Secret),
	// Digest the SHA-256 of that record's blob (hex): generations start
	// again at 1 in a new state directory.
	Generation uint64 `json:"generation,omitempty"`
	Digest     string `json:"digest,omitempty"`
	MountID    uint64 `json:"mount_id,omitempty"`
	// Follows says whether rotations reach the container; Why, if not.
	Follows bool   `json:"follows"`
	Why     string `json:"why,omitempty"`
	Revoked bool   `json:"revoked,omitempty"`
	// Pod names a Kubernetes container's pod (SPIRE's k8s: selectors).
	Pod *control.Pod `json:"pod,omitempty"`
	// SPIRE is what SPIRE last answered for the container ([spiffe]
	// issuer = "spire").
	SPIRE *spire.Status `json:"spire,omitempty"`
}

// holds is the record whose secret the container holds.
func (e *Entry) holds() control.RecordID {
	id := control.RecordID{Generation: e.Generation}
	if d, err := hex.DecodeString(e.Digest); err == nil && len(d) == len(id.BlobDigest) {
		copy(id.BlobDigest[:], d)
	}
	return id
}

func (e *Entry) setHolds(id control.RecordID) {
	e.Generation, e.Digest = id.Generation, hex.EncodeToString(id.BlobDigest[:])
}

// WhyHookMounts is why a container of plain rootless runc does not follow
// rotations.
const WhyHookMounts = "its secret is mounted from inside the container (plain rootless runc), where the agent cannot reach it"

// registration is one container, as the agent holds it.
type registration struct {
	Entry
	srv   *api.Server     // nil without the API (or revoked)
	wl    *spiffe.Server  // the SPIFFE Workload API beside it; nil without a trust domain (or revoked)
	spire *spire.Workload // wl's issuer with [spiffe] issuer = "spire" (its status outlives wl)
	fs    *live.FS        // nil when the agent holds no handle
	pidfd int
	// mntNS and pidNS are the namespaces of the container's init: a
	// connection to its sockets must come from mntNS, and containers
	// sharing pidNS are one group (see checkPIDShare).
	mntNS, pidNS control.NS
	// gate, for a container prepared for the shim, holds the
	// connections to its sockets until it is bound (shim.go).
	gate *bindGate
}

// closeAPI stops the registration's API servers.
//
// The Workload API first: its Close waits for its handlers, which count
// their refusals into the HTTP API's server.
func (s *registration) closeAPI() {
	if s.wl != nil {
		s.wl.Close()
	}
	if s.srv != nil {
		s.srv.Close()
	}
}

// revokedSender: tokens identity minted before Generation no longer verify,
// until Until, when the last of them has expired.
//
// At is when the revocation reached the agent: JWT-SVIDs, which carry no
// generation, issued to the identity before then validate as revoked.
type revokedSender struct {
	Generation uint64    `json:"generation"`
	Until      time.Time `json:"until"`
	At         time.Time `json:"at,omitzero"`
}

// saved is the file a restarted agent, and northstarctl status, read.
const saved = "registry.json"

// Saved is the content of registry.json.
type Saved struct {
	Containers []Entry                  `json:"containers"`
	Revoked    map[string]revokedSender `json:"revoked_senders,omitempty"`
	// RevokedIDs are the container ids the store's record revoked when
	// this was saved: one the record no longer names was lifted
	// (northstarctl revoke --lift), which the agent audits.
	RevokedIDs []string `json:"revoked_ids,omitempty"`
	// DropPreviousAt is when the containers' secret.previous goes (the
	// grace period of the last rotation ends).
	DropPreviousAt time.Time `json:"drop_previous_at,omitzero"`
	// SPIRE is what the agent last learnt of the SPIRE agent.
	SPIRE *spire.HostStatus `json:"spire,omitempty"`
}

// Register implements control.Registrar.
func (c *Containers) Register(req control.Request, pidfd *os.File) (control.Reply, error) {
	if err := req.Check(); err != nil {
		return control.Reply{}, err
	}
	if req.Pod != nil {
		if err := req.Pod.Check(); err != nil {
			return control.Reply{}, err
		}
	}
	switch {
	case req.API && c.api == nil:
		return control.Reply{}, errors.New("this agent serves no API ([api] enable is off where it started)")
	case req.Secret != nil && c.secret == nil:
		return control.Reply{}, errors.New("live rotation is off where this agent started ([rotation] live)")
	}
	if err := checkPidfd(int(pidfd.Fd()), req.Registration); err != nil {
		return control.Reply{}, err
	}
	if err := c.checkNotRevoked(req.ID); err != nil {
		return control.Reply{}, err
	}
	c.mu.Lock()
	s := c.byKey[req.Registration]
	c.mu.Unlock()
	if s != nil {
		// The same container again (a hook at two stages): what it has.
		return c.again(s, req)
	}
	mntNS, pidNS, err := namespacesOf(int(pidfd.Fd()))
	if err != nil {
		return control.Reply{}, fmt.Errorf("the container's namespaces: %w", err)
	}
	if err := c.checkPIDShare(req.Registration, pidNS); err != nil {
		return control.Reply{}, err
	}
	fd, err := unix.FcntlInt(pidfd.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return control.Reply{}, fmt.Errorf("dup pidfd: %w", err)
	}
	s = &registration{Entry: Entry{Registration: req.Registration, API: req.API, Since: c.gen(), Pod: req.Pod}, pidfd: fd, mntNS: mntNS, pidNS: pidNS}
	if req.HookMounts {
		s.Why = WhyHookMounts
	}
	var reply control.Reply
	if req.Secret != nil {
		// Under liveMu from the delivery until the container is listed,
		// so that a rotation either sees it or comes after.
		var unlock func()
		if reply, unlock, err = c.deliver(s, *req.Secret, req.APIDir); err != nil {
			unix.Close(fd)
			return control.Reply{}, err
		}
		defer unlock()
	}
	if err := c.serve(s, true); err != nil {
		reply.View.Close()
		return control.Reply{}, err
	}
	if err := c.record(s.Entry); err != nil {
		reply.View.Close()
		c.gone(s.Registration, false)
		return control.Reply{}, fmt.Errorf("save the registration: %w", err)
	}
	if err := c.Audit("container-registered", map[string]string{"id": s.ID, "identity": s.Identity, "pid": strconv.Itoa(s.Pid),
		"generation": strconv.FormatUint(c.gen(), 10)}); err != nil {
		// What the log cannot record does not happen.
		reply.View.Close()
		c.gone(s.Registration, false)
		return control.Reply{}, fmt.Errorf("audit log: %w", err)
	}
	if req.Secret != nil {
		if err := c.measure(s.Registration, "hook", req.Measure); err != nil {
			reply.View.Close()
			c.gone(s.Registration, false)
			return control.Reply{}, err
		}
	}
	if s.API {
		reply.Dir = c.dirOf(s.Registration)
	}
	return reply, nil
}

// again answers a second registration of the same container.
func (c *Containers) again(s *registration, req control.Request) (control.Reply, error) {
	var reply control.Reply
	if s.API {
		reply.Dir = c.dirOf(s.Registration)
	}
	c.mu.Lock()
	fs, holds := s.fs, s.holds()
	c.mu.Unlock()
	if req.Secret == nil {
		if fs != nil {
			// The hook did not take the secret the agent delivered
			// (the store had moved on as it checked): it built the
			// filesystem itself, so this one follows nothing.
			c.lost(s, "the hook built its secret's filesystem itself (the agent's delivery was not the store's current secret)")
			_ = c.save()
		}
		return reply, nil
	}
	if fs == nil {
		return control.Reply{}, errors.New("the container registered before without a secret the agent delivers")
	}
	view, err := fs.View()
	if err != nil {
		return control.Reply{}, err
	}
	reply.View = view.File()
	reply.Record = holds
	return reply, nil
}

// checkPidfd checks that pidfd is r's init process: the process it names
// is alive as r.Pid and started when the hook says. The pid and start
// time are read while the pidfd holds the process, so a pid reused since
// the hook looked cannot pass.
func checkPidfd(pidfd int, r control.Registration) error {
	pid, err := procstat.PidfdPid(pidfd)
	if err != nil {
		return fmt.Errorf("the registration's pidfd: %w", err)
	}
	if pid != r.Pid {
		return fmt.Errorf("the registration's pidfd is process %d, not %d (gone, or another pid namespace)", pid, r.Pid)
	}
	start, err := procstat.StartTime(r.Pid)
	if err != nil {
		return fmt.Errorf("container process %d: %w", r.Pid, err)
	}
	if start != r.Start {
		return fmt.Errorf("container process %d started at %d, the hook saw %d: another process", r.Pid, start, r.Start)
	}
	if pid, err := procstat.PidfdPid(pidfd); err != nil || pid != r.Pid {
		return fmt.Errorf("container process %d is gone", r.Pid)
	}
	return nil
}

func (c *Containers) dirOf(r control.Registration) string {
	return filepath.Join(c.dir, control.DirName(r))
}

// serve lists s and watches its init process; with the API it opens s's
// socket in the registration's directory (fresh: made new; else the one
// an earlier agent made, which the container has mounted) and starts its
// server. On failure s.pidfd is closed. The caller saves (restore once
// for all, not once a container: 1,000 saves of 1,000 registrations were
// a second of a restart).
func (c *Containers) serve(s *registration, fresh bool) (err error) {
	defer func() {
		if err != nil {
			unix.Close(s.pidfd)
			if s.fs != nil {
				s.fs.Close()
			}
		}
	}()
	if s.API && !s.Revoked && s.srv == nil {
		if err := c.openSocket(s, fresh); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.byKey[s.Registration] = s
	c.mu.Unlock()
	if err := c.watch.add(s.pidfd, s.Registration); err != nil {
		c.mu.Lock()
		delete(c.byKey, s.Registration)
		c.mu.Unlock()
		s.closeAPI()
		return err
	}
	return nil
}

// openSocket makes s's directory and socket and starts its API server.
func (c *Containers) openSocket(s *registration, fresh bool) error {
	dir := c.dirOf(s.Registration)
	if fresh {
		// A directory of this name could only be left by an earlier
		// agent for the same process; the container does not have it
		// mounted (it is registering now).
		_ = removeAPIDir(dir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if _, err := mountAPIDir(dir); err != nil {
			_ = os.Remove(dir)
			return err
		}
	} else if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not the directory an earlier agent made", dir)
	}
	err := c.listenAPI(s, dir)
	if err != nil && fresh {
		_ = removeAPIDir(dir)
	}
	return err
}

// listenAPI opens s's sockets in dir and starts their servers.
func (c *Containers) listenAPI(s *registration, dir string) error {
	// The mode is set, not left to the umask: a unit's UMask=0077 would
	// make it 0700 and shut out every container user but root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	sock := filepath.Join(dir, "api.sock")
	// A socket left by an earlier agent; unlink does not follow a symlink.
	_ = unix.Unlink(sock)
	ln, err := c.listen(sock, s.mntNS, s.gate)
	if err != nil {
		return err
	}
	// Connecting needs write permission on the socket; who can reach it is
	// decided by the directory (only this container has it mounted; the
	// parent is closed to other host users).
	if err := chmodSocket(sock, 0o666); err != nil {
		ln.Close()
		return err
	}
	srv := api.NewServer(s.Identity, c, c.api.limits)
	srv.SetLog(c.log)
	ln.srv = srv
	var wl *spiffe.Server
	if c.api.spiffe != nil {
		if wl, err = c.serveSPIFFE(dir, s, srv); err != nil {
			ln.Close()
			return err
		}
	}
	c.mu.Lock()
	s.srv, s.wl = srv, wl
	c.mu.Unlock()
	go srv.Serve(ln)
	return nil
}

// serveSPIFFE opens spiffe.sock in dir beside s's api.sock, served by
// srv, and serves it the Workload API of s's identity, under the
// bounds of the container's HTTP API: the same connection cap, and its
// token bucket (tarpit included) and refusal count, shared.
//
// The callbacks hold srv itself, never the registration: a revocation
// clears the registration's servers while handlers may still be running
// (they did, and one that found it nil crashed the agent, DESIGN.md §15).
func (c *Containers) serveSPIFFE(dir string, s *registration, srv *api.Server) (*spiffe.Server, error) {
	a := c.api
	cfg := spiffe.Config{CA: a.ca, Lifecycle: a.gens, Audit: c, Limiter: srv,
		Refused: func(method string, status int, reason string) { srv.CountRefusal(status, method, reason) },
		Revoked: c.RevokedJWT,
		X509TTL: a.spiffe.X509TTL, JWTTTL: a.spiffe.JWTTTL, Conns: a.limits.Conns, Log: c.log, Federated: a.spiffe.Federated}
	if a.spire != nil {
		// The container's SPIRE stream starts now, in the background;
		// the server closes it with the socket.
		s.spire = a.spire.Workload(s.Identity, s.Pod)
		cfg.Issuer = s.spire
	}
	wl, err := spiffe.NewServer(s.Identity, cfg)
	if err != nil {
		if s.spire != nil {
			s.spire.Close()
		}
		return nil, err
	}
	sock := filepath.Join(dir, spiffe.SocketName)
	_ = unix.Unlink(sock) // left by an earlier agent
	ln, err := c.listen(sock, s.mntNS, s.gate)
	if err != nil {
		wl.Close()
		return nil, err
	}
	ln.srv = srv
	if err := chmodSocket(sock, 0o666); err != nil {
		ln.Close()
		wl.Close()
		return nil, err
	}
	go wl.Serve(ln)
	return wl, nil
}

// chmodSocket sets the mode of the socket at path without following a
// symlink there: where a container could remount its read-only view of its
// directory writable (plain rootless runc, a container given
// CAP_SYS_ADMIN), it could swap api.sock for a symlink to a file of the
// agent's user between our bind and chmod.
func chmodSocket(path string, mode os.FileMode) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s is no longer the socket the agent made", path)
	}
	// chmod through the O_PATH descriptor's magic link changes that inode.
	return os.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode)
}

// gone removes the registration r, whose init process exited (or whose
// registration could not be recorded). Only r's: another registration of
// the same container id is another key.
func (c *Containers) gone(r control.Registration, audited bool) {
	c.mu.Lock()
	s := c.byKey[r]
	delete(c.byKey, r)
	c.mu.Unlock()
	if s == nil {
		return
	}
	if audited {
		_ = c.Audit("container-gone", map[string]string{"id": r.ID, "identity": r.Identity, "pid": strconv.Itoa(r.Pid)})
	}
	c.watch.remove(s.pidfd)
	unix.Close(s.pidfd)
	s.closeAPI()
	if s.fs != nil {
		s.fs.Close()
	}
	if s.API {
		_ = removeAPIDir(c.dirOf(r))
	}
	_ = c.recordGone(r)
}

// save records the registrations for a restarted agent and for status.
func (c *Containers) save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	if c.closed {
		// Close emptied byKey; the file is the next agent's.
		c.mu.Unlock()
		return errors.New("the registry is closed")
	}
	out := Saved{Containers: make([]Entry, 0, len(c.byKey)), Revoked: map[string]revokedSender{}, DropPreviousAt: c.dropAt}
	for _, s := range c.byKey {
		e := s.Entry
		e.SPIRE = nil // an earlier agent's word, if restored
		if s.spire != nil {
			st := s.spire.Status()
			e.SPIRE = &st
		}
		out.Containers = append(out.Containers, e)
	}
	if c.api != nil && c.api.spire != nil {
		h := c.api.spire.Host()
		out.SPIRE = &h
	}
	for id, r := range c.revoked {
		out.Revoked[id] = r
	}
	for id := range c.revokedIDs {
		out.RevokedIDs = append(out.RevokedIDs, id)
	}
	c.mu.Unlock()
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if err := atomicfile.Replace(filepath.Join(c.dir, saved), data, 0o600); err != nil {
		return err
	}
	return c.foldedJournal()
}

// ReadSaved reads the registrations the agent at socketPath keeps
// (northstarctl status).
func ReadSaved(socketPath string) (*Saved, error) {
	return readSaved(control.ContainersDir(socketPath))
}

func readSaved(dir string) (*Saved, error) {
	data, err := os.ReadFile(filepath.Join(dir, saved))
	if err != nil {
		return nil, err
	}
	var s Saved
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", saved, err)
	}
	if err := readJournal(dir, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", journal, err)
	}
	return &s, nil
}

// restore serves again the containers an earlier agent registered that
// still run (the same pid and start time), each in the directory it has
// mounted, takes back their secret filesystems, and removes the
// directories of the others.
func (c *Containers) restore(ctx context.Context) {
	saved, err := readSaved(c.dir)
	if err != nil {
		saved = &Saved{}
	}
	c.mu.Lock()
	for id, r := range saved.Revoked {
		c.revoked[id] = r
	}
	for _, id := range saved.RevokedIDs {
		c.revokedIDs[id] = true
	}
	c.dropAt = saved.DropPreviousAt
	c.mu.Unlock()
	// The store's revocations apply before any socket is served: one made
	// while the agent was stopped (with or without live rotation) would
	// otherwise be served until the next rotation, or forever.
	var revs []store.Revocation
	if c.store != nil {
		if rec, err := c.store.Current(); err == nil {
			revs = rec.Revoked
			c.noteRevocations(revs)
		}
	}
	keep := map[string]bool{"registry.json": true, journal: true}
	back := map[control.Registration]*registration{}
	var pending []*registration // whose secret filesystem to take back
	for _, e := range saved.Containers {
		if e.Check() != nil {
			continue
		}
		pidfd, err := unix.PidfdOpen(e.Pid, unix.PIDFD_NONBLOCK)
		if err != nil {
			continue
		}
		// The pidfd names whatever has the pid now: it is e's process only
		// if it started when e's did.
		if checkPidfd(pidfd, e.Registration) != nil {
			unix.Close(pidfd)
			continue
		}
		s := &registration{Entry: e, pidfd: pidfd}
		if s.mntNS, s.pidNS, err = namespacesOf(pidfd); err != nil {
			unix.Close(pidfd)
			continue
		}
		if s.API && c.api == nil {
			s.API = false // the agent was started without [api] enable this time
		}
		if c.takeBackPending(s) {
			pending = append(pending, s)
		}
		back[s.Registration] = s
	}
	// Every revocation, groups included, before the first socket.
	for s, gen := range revocations(back, revs) {
		c.revoke(s, gen)
	}
	for _, s := range back {
		if c.serve(s, false) == nil && s.API {
			keep[control.DirName(s.Registration)] = true
		}
	}
	// Directories of containers that are gone, and anything else there.
	if ents, err := os.ReadDir(c.dir); err == nil {
		for _, e := range ents {
			if !keep[e.Name()] {
				_ = removeAPIDir(filepath.Join(c.dir, e.Name()))
			}
		}
	}
	_ = c.save()
	// Their secret filesystems back, off the restart's path (a container's
	// mount tree may hang), then the rotations they missed.
	c.takeBackAll(ctx, pending)
}

// Close stops every server and lets every handle go; sockets and
// directories stay for the next agent (the containers keep them mounted).
func (c *Containers) Close() error {
	close(c.stop)
	c.done.Wait()
	c.forgetPrepared()
	// After any rotation that runs (the agent's watch is not joined):
	// none starts after, and none saves the emptied list.
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	c.mu.Lock()
	c.closed = true
	for _, s := range c.byKey {
		s.closeAPI() // writes the last refusal counts
		if s.fs != nil {
			s.fs.Close()
		}
		unix.Close(s.pidfd)
	}
	c.byKey = map[control.Registration]*registration{}
	c.mu.Unlock()
	c.closeJournal()
	c.watch.close()
	if c.api != nil {
		return c.api.close()
	}
	return nil
}

func (c *Containers) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// background runs fn every d until Close.
func (c *Containers) background(d time.Duration, fn func()) {
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// Options configure Open.
type Options struct {
	Dir   string       // where the containers' directories go (0711, created)
	Store *store.Store // the lifecycle secret's record (and the API's keys)
	// Live turns on live rotation (DESIGN.md §12): the agent delivers the
	// secret of every container the hook registers, from Secret, and
	// rewrites it at every rotation. Grace is how long the one before
	// stays as secret.previous.
	Live   bool
	Secret Secret
	Grace  time.Duration
	// API, when set, turns on the per-container API (DESIGN.md §9).
	API *APIOptions
	// Log takes warnings and notices (never a secret).
	Log io.Writer
}

// Open opens the registry: with the API, its keys, audit log and memory of
// used tokens; then it serves again the containers an earlier agent
// registered, and catches them up to the generation in force. gen returns
// the lifecycle generation in force.
func Open(ctx context.Context, opts Options, gen func() uint64) (*Containers, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if err := os.Mkdir(opts.Dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", opts.Dir, err)
	}
	// Not left to the umask (see serve).
	if err := os.Chmod(opts.Dir, 0o711); err != nil {
		return nil, err
	}
	c := &Containers{dir: opts.Dir, store: opts.Store, gen: gen, log: opts.Log, grace: opts.Grace,
		byKey: map[control.Registration]*registration{}, revoked: map[string]revokedSender{}, revokedIDs: map[string]bool{}, stop: make(chan struct{}), current: gen()}
	if opts.Live {
		c.secret = opts.Secret
	}
	if opts.API != nil {
		a, err := openAPI(ctx, *opts.API, opts.Store, c)
		if err != nil {
			return nil, err
		}
		c.api = a
	}
	w, err := newPidWatch()
	if err != nil {
		if c.api != nil {
			c.api.close()
		}
		return nil, err
	}
	c.watch = w
	go w.run(func(r control.Registration) { c.gone(r, true) })
	c.removeStale()
	c.restore(ctx)
	if c.api != nil {
		c.api.start(c)
	}
	c.background(time.Second, c.dropPrevious)
	c.background(time.Minute, c.sweepPrepared)
	return c, nil
}

// readSecret reads the sealed memfd of the secret in its in-container
// form; the caller zeroes it.
func readSecret(memfd *os.File) ([]byte, error) { return secretfs.ReadMemfd(memfd) }

// ownerOf is a control.Owner as the mount package takes it.
func ownerOf(o control.Owner) mount.Owner {
	return mount.Owner{UID: o.UID, GID: o.GID, Mode: os.FileMode(o.Mode)}
}
