// Package registry is the agent's side of the containers: it gives each
// container the hook registers its own API socket, watches the container's
// init process, and keeps the registrations across agent restarts.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/agent/token"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/store"
)

// Containers gives each registered container its own API socket (DESIGN.md
// §9): a directory <containers>/<name> holding api.sock, which the hook
// bind-mounts read-only at /run/northstar/api in that container only. The
// socket a request arrives on is the caller's identity. Each container's
// init process is watched through the pidfd the hook sent; when it is
// gone, so is its socket. Registrations are kept in
// <containers>/registry.json, so a restarted agent serves the running
// containers again.
//
// A registration's key is the container id, its init pid and that
// process's start time: ids repeat across runc roots, podman and
// containerd namespaces, and keyed by id alone a second container with a
// live id took the first one's directory (DESIGN.md §11). Each key has a
// directory of its own, which nothing else ever reuses.
type Containers struct {
	root    *keys.Root
	audit   *audit.Log
	used    *replay.Memory
	ttl     time.Duration
	gen     func() uint64
	dir     string // <agent socket dir>/containers
	limits  api.Limits
	watch   *pidWatch
	tokenKs tokenKeys
	log     io.Writer

	verifier *token.Verifier

	mu    sync.Mutex // guards byKey, prev
	byKey map[control.Registration]*registration
	prev  uint64 // the generation before the current one (0: none known)

	saveMu sync.Mutex // serializes save: a later snapshot is never overwritten by an earlier one

	stop chan struct{} // ends the background work
	done sync.WaitGroup
}

var _ api.Agent = (*Containers)(nil)
var _ control.Registrar = (*Containers)(nil)

// registration is one container's socket and server.
type registration struct {
	Reg   control.Registration `json:"registration"`
	srv   *api.Server
	pidfd int
}

// Current implements api.Agent: the generation before the current one is
// the one this agent served before the last rotation it saw, or, right
// after it started, the generation number below (generations only skip
// numbers when a state directory's record was lost).
func (c *Containers) Current() (*keys.Root, uint64, uint64) {
	gen := c.gen()
	c.mu.Lock()
	prev := c.prev
	c.mu.Unlock()
	if prev == 0 || prev >= gen {
		prev = gen - 1
	}
	return c.root, gen, prev
}

// Verifier implements api.Agent.
func (c *Containers) Verifier() *token.Verifier { return c.verifier }

// DefaultTTL implements api.Agent.
func (c *Containers) DefaultTTL() time.Duration { return c.ttl }

// Audit implements api.Agent.
func (c *Containers) Audit(event string, fields map[string]string) error {
	return c.audit.Append(event, fields)
}

// RootLocked reports whether the root key's page is locked in memory.
func (c *Containers) RootLocked() bool { return c.root.Locked() }

// Register implements control.Registrar.
func (c *Containers) Register(r control.Registration, pidfd *os.File) (string, error) {
	if err := r.Check(); err != nil {
		return "", err
	}
	if err := checkPidfd(int(pidfd.Fd()), r); err != nil {
		return "", err
	}
	c.mu.Lock()
	s := c.byKey[r]
	c.mu.Unlock()
	if s != nil {
		// The same container again (a hook at two stages): the same
		// directory.
		return c.dirOf(r), nil
	}
	fd, err := unix.FcntlInt(pidfd.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("dup pidfd: %w", err)
	}
	if err := c.serve(&registration{Reg: r, pidfd: fd}, true); err != nil {
		return "", err
	}
	if err := c.save(); err != nil {
		c.gone(r, false)
		return "", fmt.Errorf("save the registration: %w", err)
	}
	if err := c.Audit("container-registered", map[string]string{"id": r.ID, "identity": r.Identity, "pid": strconv.Itoa(r.Pid),
		"generation": strconv.FormatUint(c.gen(), 10)}); err != nil {
		// What the log cannot record does not happen.
		c.gone(r, false)
		return "", fmt.Errorf("audit log: %w", err)
	}
	return c.dirOf(r), nil
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

// serve opens s's socket in the registration's directory (fresh: made new;
// else the one an earlier agent made, which the container has mounted),
// starts its server and watches its init process. On failure s.pidfd is
// closed. The caller saves (restore once for all, not once a container:
// 1,000 saves of 1,000 registrations were a second of a restart).
func (c *Containers) serve(s *registration, fresh bool) (err error) {
	dir := c.dirOf(s.Reg)
	defer func() {
		if err != nil {
			unix.Close(s.pidfd)
			if fresh {
				os.RemoveAll(dir)
			}
		}
	}()
	if fresh {
		// A directory of this name could only be left by an earlier
		// agent for the same process; the container does not have it
		// mounted (it is registering now).
		_ = os.RemoveAll(dir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	} else if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not the directory an earlier agent made", dir)
	}
	// The mode is set, not left to the umask: a unit's UMask=0077 would
	// make it 0700 and shut out every container user but root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	sock := filepath.Join(dir, "api.sock")
	// A socket left by an earlier agent; unlink does not follow a symlink.
	_ = unix.Unlink(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Connecting needs write permission on the socket; who can reach it is
	// decided by the directory (only this container has it mounted; the
	// parent is closed to other host users).
	if err := chmodSocket(sock, 0o666); err != nil {
		ln.Close()
		return err
	}
	s.srv = api.NewServer(s.Reg.Identity, c, c.limits)
	c.mu.Lock()
	c.byKey[s.Reg] = s
	c.mu.Unlock()
	go s.srv.Serve(ln)
	if err := c.watch.add(s.pidfd, s.Reg); err != nil {
		c.mu.Lock()
		delete(c.byKey, s.Reg)
		c.mu.Unlock()
		s.srv.Close()
		return err
	}
	return nil
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
	s.srv.Close()
	_ = os.RemoveAll(c.dirOf(r))
	_ = c.save()
}

// saved is the file a restarted agent reads.
const saved = "registry.json"

// save records the registrations for a restarted agent.
func (c *Containers) save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	list := make([]control.Registration, 0, len(c.byKey))
	for k := range c.byKey {
		list = append(list, k)
	}
	c.mu.Unlock()
	data, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return atomicfile.Replace(filepath.Join(c.dir, saved), data, 0o600)
}

// restore serves again the containers an earlier agent registered that
// still run (the same pid and start time), each in the directory it has
// mounted, and removes the directories of the others.
func (c *Containers) restore() {
	data, err := os.ReadFile(filepath.Join(c.dir, saved))
	var list []control.Registration
	if err == nil && json.Unmarshal(data, &list) != nil {
		list = nil
	}
	keep := map[string]bool{saved: true}
	for _, r := range list {
		if r.Check() != nil {
			continue
		}
		pidfd, err := unix.PidfdOpen(r.Pid, unix.PIDFD_NONBLOCK)
		if err != nil {
			continue
		}
		// The pidfd names whatever has the pid now: it is r's process only
		// if it started when r's did.
		if checkPidfd(pidfd, r) != nil {
			unix.Close(pidfd)
			continue
		}
		if c.serve(&registration{Reg: r, pidfd: pidfd}, false) == nil {
			keep[control.DirName(r)] = true
		}
	}
	// Directories of containers that are gone, and anything else there.
	if ents, err := os.ReadDir(c.dir); err == nil {
		for _, e := range ents {
			if !keep[e.Name()] {
				_ = os.RemoveAll(filepath.Join(c.dir, e.Name()))
			}
		}
	}
	_ = c.save()
}

// Close stops every server; sockets and directories stay for the next
// agent (the containers keep them mounted).
func (c *Containers) Close() error {
	close(c.stop)
	c.done.Wait()
	c.mu.Lock()
	for _, s := range c.byKey {
		s.srv.Close() // writes the last refusal counts
		unix.Close(s.pidfd)
	}
	c.byKey = map[control.Registration]*registration{}
	c.mu.Unlock()
	c.watch.close()
	c.tokenKs.zero()
	return errors.Join(c.used.Close(), c.audit.Close())
}

// Rotated records a new lifecycle generation; prev is the one before.
func (c *Containers) Rotated(generation, prev uint64) {
	c.mu.Lock()
	c.prev = prev
	c.mu.Unlock()
	_ = c.Audit("lifecycle-rotated", map[string]string{"generation": strconv.FormatUint(generation, 10)})
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

// flushRefusals writes every socket's refusal count.
func (c *Containers) flushRefusals() {
	c.mu.Lock()
	servers := make([]*api.Server, 0, len(c.byKey))
	for _, s := range c.byKey {
		servers = append(servers, s.srv)
	}
	c.mu.Unlock()
	for _, s := range servers {
		s.FlushRefusals()
	}
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
	// UsedTokens is the journal of used tokens ("": replay.FileName
	// beside the audit log, in the state directory); Replay bounds its
	// memory.
	UsedTokens string
	Replay     replay.Limits
	// API bounds what each container's socket takes of the agent.
	API api.Limits
	// Log takes warnings (never a secret): an audit history that no
	// longer verifies.
	Log io.Writer
}

// Open unseals (or makes) the agent's root and audit keys, opens the
// audit log and the memory of used tokens, and serves again the
// containers an earlier agent registered. gen returns the lifecycle
// generation in force.
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
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.UsedTokens == "" {
		opts.UsedTokens = filepath.Join(filepath.Dir(opts.AuditPath), replay.FileName)
	}
	root, err := keys.LoadRoot(func(dst []byte) error { return load(ctx, RootKeyName, dst) })
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	auditKey := make([]byte, 32)
	defer clear(auditKey)
	if err := load(ctx, AuditKeyName, auditKey); err != nil {
		root.Zero()
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
	log, err := audit.Open(opts.AuditPath, auditKey, opts.AuditLimits, want)
	if err != nil {
		root.Zero()
		// Not extended: keep the evidence, start a new log by hand.
		return nil, fmt.Errorf("audit log does not verify: %w; keep %s* as evidence and run 'northstarctl audit reset' (agent stopped) to start a new log", err, opts.AuditPath)
	}
	log.SyncEvery(100 * time.Millisecond)
	// The memory of used tokens is a journal of its own: relearnt from
	// the audit log it was as good as the log, which a container flooding
	// it with refused requests could prune (DESIGN.md §11).
	used, err := replay.Open(opts.UsedTokens, opts.Replay)
	if err != nil {
		log.Close()
		root.Zero()
		return nil, err
	}
	c, err := newContainers(root, log, used, opts, gen)
	if err != nil {
		used.Close()
		log.Close()
		root.Zero()
		return nil, err
	}
	if err := c.Audit("lifecycle-started", map[string]string{"generation": strconv.FormatUint(gen(), 10)}); err != nil {
		c.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	// What the log's checkpoint let Open skip is verified now, beside the
	// serving: a file edited or removed while the agent was stopped is
	// reported without delaying the start.
	histKey := append([]byte(nil), auditKey...)
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		defer clear(histKey)
		if _, err := log.VerifyHistory(histKey); err != nil {
			fmt.Fprintf(opts.Log, "agent: warning: the audit history does not verify: %v; keep %s* as evidence ('northstarctl audit verify' names the line)\n", err, opts.AuditPath)
			_ = c.Audit("audit-history-does-not-verify", map[string]string{"error": err.Error()})
		}
	}()
	return c, nil
}

func newContainers(root *keys.Root, log *audit.Log, used *replay.Memory, opts Options, gen func() uint64) (*Containers, error) {
	if err := os.Mkdir(opts.Dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", opts.Dir, err)
	}
	// Not left to the umask (see serve).
	if err := os.Chmod(opts.Dir, 0o711); err != nil {
		return nil, err
	}
	w, err := newPidWatch()
	if err != nil {
		return nil, err
	}
	c := &Containers{root: root, audit: log, used: used, ttl: opts.TokenTTL, gen: gen, dir: opts.Dir, limits: opts.API,
		watch: w, log: opts.Log, byKey: map[control.Registration]*registration{}, stop: make(chan struct{})}
	c.tokenKs.derive = root.TokenKey
	c.verifier = &token.Verifier{Memory: used, Key: func(g uint64) []byte {
		// Tokens of earlier generations verify until they expire (at most
		// an hour); none of a generation still to come.
		if g == 0 || g > c.gen() {
			return nil
		}
		return c.tokenKs.get(g)
	}}
	go w.run(func(r control.Registration) { c.gone(r, true) })
	c.restore()
	c.background(api.RefusalInterval, c.flushRefusals)
	c.background(time.Minute, func() {
		used.Sweep()
		c.tokenKs.sweep(api.MaxTTL)
	})
	return c, nil
}
