// Package registry is the agent's side of the containers: it gives each
// container the hook registers its own API socket, watches the container's
// init process, and keeps the registrations across agent restarts.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/token"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/store"
)

// Containers gives each registered container its own API socket (DESIGN.md
// §9): a directory <containers>/<id> holding api.sock, which the hook
// bind-mounts read-only at /run/northstar/api in that container only. The
// socket a request arrives on is the caller's identity. Each container's
// init process is watched through a pidfd; when it is gone, so is its
// socket. Registrations are kept in <containers>/registry.json, so a
// restarted agent serves the running containers again.
type Containers struct {
	root     *keys.Root
	audit    *audit.Log
	ttl      time.Duration
	gen      func() uint64
	verifier *token.Verifier
	dir      string // <agent socket dir>/containers
	watch    *pidWatch

	mu   sync.Mutex // guards byID
	byID map[string]*apiSocket

	keyMu     sync.Mutex // guards tokenKeys
	tokenKeys map[uint64][]byte
}

var _ api.Agent = (*Containers)(nil)
var _ control.Registrar = (*Containers)(nil)

// apiSocket is one container's socket and server.
type apiSocket struct {
	Reg   control.Registration `json:"registration"`
	Start uint64               `json:"start"` // the init process's start time
	srv   *http.Server
	pidfd int
}

func newContainers(root *keys.Root, log *audit.Log, ttl time.Duration, gen func() uint64, dir string) (*Containers, error) {
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	w, err := newPidWatch()
	if err != nil {
		return nil, err
	}
	c := &Containers{root: root, audit: log, ttl: ttl, gen: gen, dir: dir, watch: w, byID: map[string]*apiSocket{}}
	c.verifier = &token.Verifier{MaxRemembered: 1 << 20, Key: func(g uint64) []byte {
		// Tokens of earlier generations verify until they expire (at most
		// an hour); none of a generation still to come.
		if g == 0 || g > c.gen() {
			return nil
		}
		return c.tokenKey(g)
	}}
	go w.run(c.gone)
	c.restore()
	return c, nil
}

// tokenKey derives (once per generation) the HMAC key of g's tokens.
func (c *Containers) tokenKey(g uint64) []byte {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if c.tokenKeys == nil {
		c.tokenKeys = map[uint64][]byte{}
	}
	k, ok := c.tokenKeys[g]
	if !ok {
		k = c.root.TokenKey(g)
		c.tokenKeys[g] = k
	}
	return k
}

// api.Agent.
func (c *Containers) Current() (*keys.Root, uint64) { return c.root, c.gen() }
func (c *Containers) Verifier() *token.Verifier     { return c.verifier }
func (c *Containers) DefaultTTL() time.Duration     { return c.ttl }
func (c *Containers) Audit(event string, fields map[string]string) {
	_ = c.audit.Append(event, fields) // best effort: a full disk must not stop the API
}

// Register implements control.Registrar.
func (c *Containers) Register(r control.Registration) (string, error) {
	if err := r.Check(); err != nil {
		return "", err
	}
	start, err := procstat.StartTime(r.Pid)
	if err != nil {
		return "", fmt.Errorf("container process %d: %w", r.Pid, err)
	}
	s := &apiSocket{Reg: r, Start: start}
	if err := c.serve(s); err != nil {
		return "", err
	}
	c.Audit("container-registered", map[string]string{"id": r.ID, "identity": r.Identity, "generation": strconv.FormatUint(c.gen(), 10)})
	return c.dirOf(r.ID), nil
}

func (c *Containers) dirOf(id string) string { return filepath.Join(c.dir, control.DirName(id)) }

// serve opens s's socket (in a directory kept for the container's life:
// its bind mount in the container must keep pointing at it), starts its
// server and watches its init process.
func (c *Containers) serve(s *apiSocket) error {
	pidfd, err := unix.PidfdOpen(s.Reg.Pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", s.Reg.Pid, err)
	}
	// The pid could have been reused between the caller's look and ours.
	if st, err := procstat.StartTime(s.Reg.Pid); err != nil || st != s.Start {
		unix.Close(pidfd)
		return fmt.Errorf("container process %d is gone", s.Reg.Pid)
	}
	dir := c.dirOf(s.Reg.ID)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		unix.Close(pidfd)
		return fmt.Errorf("create %s: %w", dir, err)
	}
	sock := filepath.Join(dir, "api.sock")
	_ = os.Remove(sock) // a socket left by an earlier agent
	ln, err := net.Listen("unix", sock)
	if err != nil {
		unix.Close(pidfd)
		return fmt.Errorf("listen: %w", err)
	}
	// Connecting needs write permission on the socket; who can reach it is
	// decided by the directory (only this container has it mounted; the
	// parent is closed to other host users).
	if err := chmodSocket(sock, 0o666); err != nil {
		ln.Close()
		unix.Close(pidfd)
		return err
	}
	s.pidfd = pidfd
	// MaxHeaderBytes: a container's request line and headers, not the
	// default megabyte (bodies have api.MaxBody).
	s.srv = &http.Server{Handler: api.Handler(s.Reg.Identity, c), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
		MaxHeaderBytes: 16 << 10}
	c.mu.Lock()
	old := c.byID[s.Reg.ID]
	c.byID[s.Reg.ID] = s
	c.mu.Unlock()
	if old != nil {
		c.watch.remove(old.pidfd)
		old.srv.Close()
		unix.Close(old.pidfd)
	}
	go s.srv.Serve(ln)
	if err := c.watch.add(pidfd, s.Reg.ID); err != nil {
		return err
	}
	return c.save()
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

// gone removes the socket of a container whose init process exited.
func (c *Containers) gone(id string) {
	c.mu.Lock()
	s := c.byID[id]
	delete(c.byID, id)
	c.mu.Unlock()
	if s == nil {
		return
	}
	c.Audit("container-gone", map[string]string{"id": id, "identity": s.Reg.Identity})
	c.watch.remove(s.pidfd)
	unix.Close(s.pidfd)
	s.srv.Close()
	_ = os.RemoveAll(c.dirOf(id))
	_ = c.save()
}

// save records the registrations for a restarted agent.
func (c *Containers) save() error {
	c.mu.Lock()
	list := make([]*apiSocket, 0, len(c.byID))
	for _, s := range c.byID {
		list = append(list, s)
	}
	data, err := json.Marshal(list)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(c.dir, "registry.json"), data, 0o600)
}

// restore serves again the containers an earlier agent registered that
// still run (same pid, same start time), and forgets the others.
func (c *Containers) restore() {
	data, err := os.ReadFile(filepath.Join(c.dir, "registry.json"))
	if err != nil {
		return
	}
	var list []*apiSocket
	if json.Unmarshal(data, &list) != nil {
		return
	}
	for _, s := range list {
		if s.Reg.Check() != nil {
			continue
		}
		if st, err := procstat.StartTime(s.Reg.Pid); err != nil || st != s.Start || c.serve(s) != nil {
			_ = os.RemoveAll(c.dirOf(s.Reg.ID))
		}
	}
	_ = c.save()
}

// RootLocked reports whether the root key's page is locked in memory.
func (c *Containers) RootLocked() bool { return c.root.Locked() }

// Close stops every server; sockets and directories stay for the next
// agent (the containers keep them mounted).
func (c *Containers) Close() error {
	defer c.audit.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.byID {
		s.srv.Close()
		unix.Close(s.pidfd)
	}
	c.byID = map[string]*apiSocket{}
	c.watch.close()
	return nil
}

// Rotated records a new lifecycle generation.
func (c *Containers) Rotated(generation uint64) {
	c.Audit("lifecycle-rotated", map[string]string{"generation": strconv.FormatUint(generation, 10)})
}

// Key names in the store: kept sealed across rotations.
const (
	RootKeyName  = "root"
	AuditKeyName = "audit"
)

// Options configure Open.
type Options struct {
	Store *store.Store // holds the agent's keys
	// LoadKey, if set, fills dst with the store's key name; the agent sets
	// it to unseal in a child (agent.KeyInChild). Nil: Store.Key here.
	LoadKey   func(ctx context.Context, name string, dst []byte) error
	TokenTTL  time.Duration // default token lifetime
	AuditPath string        // the hash-chained audit log
	Dir       string        // where the containers' directories go (0711, created)
	// AuditLimits bound the audit log on disk (rotation by size); zero
	// fields take audit's defaults.
	AuditLimits audit.Limits
}

// Open unseals (or makes) the agent's root and audit keys, opens the
// audit log and serves again the containers an earlier agent registered.
// gen returns the lifecycle generation in force.
func Open(ctx context.Context, opts Options, gen func() uint64) (*Containers, error) {
	load := opts.LoadKey
	if load == nil {
		load = func(ctx context.Context, name string, dst []byte) error {
			k, err := opts.Store.Key(ctx, name, len(dst))
			copy(dst, k)
			clear(k)
			return err
		}
	}
	root, err := keys.LoadRoot(func(dst []byte) error { return load(ctx, RootKeyName, dst) })
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	auditKey := make([]byte, 32)
	if err := load(ctx, AuditKeyName, auditKey); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	// The head recorded at the last rotation: a log cut below it and
	// written on by this agent would otherwise hide the cut for good.
	var want *audit.Head
	if opts.Store != nil {
		if rec, err := opts.Store.Current(); err == nil {
			want = rec.AuditHead
		}
	}
	// The replay cache is memory: learn from the log, as it is verified,
	// which tokens an earlier agent accepted that have not expired, or
	// each would verify a second time after a restart.
	now := time.Now()
	used := map[string]time.Time{}
	log, err := audit.OpenEach(opts.AuditPath, auditKey, opts.AuditLimits, want, func(e *audit.Entry) {
		if e.Event != "token-verified" || e.Fields["result"] != "valid" || e.Fields["token_id"] == "" {
			return
		}
		exp, err := time.Parse(time.RFC3339, e.Fields["expires"])
		if err != nil {
			exp = e.Time.Add(api.MaxTTL) // lines from before the field: the longest a token lives
		}
		if now.Before(exp) {
			used[e.Fields["token_id"]] = exp
		}
	})
	clear(auditKey)
	if err != nil {
		// Not extended: keep the evidence, start a new log by hand.
		return nil, fmt.Errorf("audit log does not verify: %w; keep %s* as evidence and run 'northstarctl audit reset' (agent stopped) to start a new log", err, opts.AuditPath)
	}
	log.SyncEvery(100 * time.Millisecond)
	r, err := newContainers(root, log, opts.TokenTTL, gen, opts.Dir)
	if err != nil {
		log.Close()
		return nil, err
	}
	for id, exp := range used {
		r.verifier.Used(id, exp)
	}
	r.Audit("lifecycle-started", map[string]string{"generation": strconv.FormatUint(gen(), 10)})
	return r, nil
}

// pidWatch waits on many pidfds with one epoll, so a thousand containers
// cost one goroutine, not a thousand threads.
type pidWatch struct {
	epfd, wake int
	mu         sync.Mutex // guards ids
	ids        map[int32]string
}

func newPidWatch() (*pidWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &pidWatch{epfd: epfd, wake: wake, ids: map[int32]string{}}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *pidWatch) add(pidfd int, id string) error {
	w.mu.Lock()
	w.ids[int32(pidfd)] = id
	w.mu.Unlock()
	return unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(pidfd)})
}

func (w *pidWatch) remove(pidfd int) {
	w.mu.Lock()
	delete(w.ids, int32(pidfd))
	w.mu.Unlock()
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, pidfd, nil)
}

// run calls gone with the id of each process that exits, until close.
func (w *pidWatch) run(gone func(id string)) {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(w.wake) {
				return
			}
			w.mu.Lock()
			id, ok := w.ids[ev.Fd]
			w.mu.Unlock()
			if ok {
				gone(id)
			}
		}
	}
}

func (w *pidWatch) close() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(w.wake, one[:])
}
