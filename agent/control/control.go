// Package control is the protocol between the hook and the agent
// (DESIGN.md §8, §9): the agent's control socket, what travels over it,
// and the checks both ends make of each other. It is all the hook and the
// shim know of the agent; the daemon itself (package agent and its other
// sub-packages) is never linked into them.
//
// Listen and Serve are the agent's side; Fetch, FetchCurrent and Register
// the hook's. A request is one message per connection on a SOCK_SEQPACKET
// socket: 'S' asks for the secret, answered by the RecordID of the secret
// (generation, 8 bytes big endian, then the 32-byte SHA-256 of the sealed
// blob) with exactly one memfd attached by SCM_RIGHTS; 'R' and a JSON
// Registration registers a container, answered by the directory of its
// API socket.
//
// Both ends check each other with SO_PEERCRED: only uid 0 of the checking
// process's user namespace, or its own uid, is accepted, and the agent
// serves only clients in its own mount namespace. The receiver trusts
// nothing it gets: it verifies the seals and the content's format and falls
// back to the TPM on any doubt.
package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/identity"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

// FetchTimeout bounds a whole Fetch: the hook must not wait on a hung agent
// longer than a TPM unseal would take.
const FetchTimeout = 200 * time.Millisecond

// RegisterTimeout bounds a whole registration. Longer than a Fetch: a
// registration that fails fails the container's start (there is nothing
// to fall back to), and the agent makes a directory and a socket for it,
// which a busy disk can stall for a few hundred milliseconds (measured
// here: up to 0.2 s with the agent's directory on ext4; /run is tmpfs on
// most hosts).
const RegisterTimeout = 5 * time.Second

// network is SOCK_SEQPACKET: the record id and its fd arrive as one
// message, never split or merged.
const network = "unixpacket"

// msgSize is the payload: a RecordID.
const msgSize = 8 + sha256.Size

// RecordID names the stored record a memfd was unsealed from: its
// generation, for people, and the SHA-256 of its sealed blob, which no two
// secrets share. Matching on the generation alone would let an agent that
// holds an old generation 1 serve it again after the state was wiped and
// initialised (generations start over at 1 there).
type RecordID struct {
	Generation uint64
	BlobDigest [sha256.Size]byte
}

// IDOf returns the RecordID of rec.
func IDOf(rec *store.Record) RecordID {
	return RecordID{Generation: rec.Generation, BlobDigest: sha256.Sum256(rec.Blob)}
}

func (id RecordID) marshal() []byte {
	return append(binary.BigEndian.AppendUint64(nil, id.Generation), id.BlobDigest[:]...)
}

func unmarshalRecordID(b []byte) RecordID {
	id := RecordID{Generation: binary.BigEndian.Uint64(b)}
	copy(id.BlobDigest[:], b[8:])
	return id
}

// serveTimeout bounds how long a slow client may hold the (serial) server.
const serveTimeout = time.Second

// ErrRefused: the peer at the other end of the socket is not allowed.
var ErrRefused = errors.New("peer refused")

// Source returns the memfd to serve and the id of its record. The caller
// of a Source owns the returned file and closes it, so a Source returns a
// duplicate of what it holds and can swap its memfd at any time.
type Source func() (memfd *os.File, id RecordID, err error)

// Listen creates the socket's directory with mode 0700 (or accepts it if it
// already has exactly that mode and this process's owner) and listens on
// socketPath. The directory keeps every other user away from the socket
// whatever the socket's own mode; it must never be mounted into containers.
func Listen(socketPath string) (*net.UnixListener, error) {
	if err := MakeDir(socketPath); err != nil {
		return nil, err
	}
	// A socket left by an agent that was killed blocks bind; only a socket
	// is removed, and only inside the checked directory.
	if fi, err := os.Lstat(socketPath); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", socketPath)
		}
		if err := os.Remove(socketPath); err != nil {
			return nil, fmt.Errorf("remove stale agent socket: %w", err)
		}
	}
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: socketPath, Net: network})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(socketPath, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod agent socket: %w", err)
	}
	return ln, nil
}

// MakeDir creates the directory of socketPath with mode 0700, or accepts
// it if it already has exactly that mode and this process's owner, as
// Listen does: the agent makes it before it listens, to keep the
// containers' directories there (ContainersDir).
func MakeDir(socketPath string) error {
	if !filepath.IsAbs(socketPath) {
		return fmt.Errorf("agent socket %q is not an absolute path", socketPath)
	}
	dir := filepath.Dir(socketPath)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create agent directory: %w", err)
	}
	return checkDir(dir)
}

// checkDir refuses a socket directory that others could enter or replace.
func checkDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("agent directory: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("agent directory %s is not a directory", dir)
	}
	if st.Uid != uint32(os.Geteuid()) {
		return fmt.Errorf("agent directory %s is owned by uid %d, not by this process (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if perm := st.Mode & 0o7777; perm != 0o700 {
		return fmt.Errorf("agent directory %s has mode %04o, want 0700", dir, perm)
	}
	return nil
}

// Registrar is the agent's side of registrations: the hook registers each
// container that gets the API, and learns the directory to mount at
// /run/northstar/api. pidfd is the hook's pidfd of the container's init
// process, received with the registration: it names that process, where a
// pid could have been reused by the time the agent looks.
type Registrar interface {
	Register(r Registration, pidfd *os.File) (dir string, err error)
}

// Registration is what the hook tells the agent about a container.
type Registration struct {
	ID       string `json:"id"`       // the OCI container id
	Identity string `json:"identity"` // who the container speaks as
	Pid      int    `json:"pid"`      // its init process, watched by pidfd
	// Start is the init process's start time as the hook read it (clock
	// ticks since boot, /proc/<pid>/stat field 22). With the id and the
	// pid it is the registration's key: container ids repeat across runc
	// roots, podman and containerd namespaces, so no registration shares
	// or inherits another's directory or identity.
	Start uint64 `json:"start"`
}

// Check refuses a registration the agent cannot serve: a container id
// that is not safe in a path, an identity outside the rule
// (identity.Valid), a pid that cannot be a container's init process.
func (r Registration) Check() error {
	switch {
	case !validContainerID(r.ID):
		return fmt.Errorf("container id %q is not 1-128 characters of [A-Za-z0-9_.-]", r.ID)
	case !identity.Valid(r.Identity):
		return fmt.Errorf("identity %q is not 1-253 characters of [A-Za-z0-9._:@/-]", r.Identity)
	case r.Pid <= 1:
		return fmt.Errorf("pid %d is not a container's init process", r.Pid)
	case r.Start == 0:
		return errors.New("the registration names no start time of the container's process (a hook older than the agent?)")
	}
	return nil
}

// validContainerID reports whether id is 1-128 bytes of [A-Za-z0-9_.-]
// starting with a letter or digit: what runc accepts, and safe in a path.
// A loop, not a regexp: compiling `{0,127}` at package init cost every
// northstarctl process (the agent's unseal children too) 0.9 ms;
// TestValidContainerIDMatchesTheRule holds it to that expression.
func validContainerID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// ContainersDir is where the agent at socketPath keeps the containers'
// directories: beside its control socket, in the agent's own directory,
// which is never mounted into containers.
func ContainersDir(socketPath string) string {
	return filepath.Join(filepath.Dir(socketPath), "containers")
}

// ContainerDir is the directory (holding api.sock) that the agent at
// socketPath gives the container registered as r. The hook needs it without
// asking where it runs inside the container (createContainer): the agent
// serves only its own mount namespace.
func ContainerDir(socketPath string, r Registration) string {
	return filepath.Join(ContainersDir(socketPath), DirName(r))
}

// DirName is the name of a registration's directory: a short hash of its
// key (id, pid, start time), since ids run to 128 characters (CRI's are
// 64 hex) and a unix socket's path holds at most 107 bytes. Every
// registration has a directory of its own: a second container with the
// same id gets another.
func DirName(r Registration) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d", r.ID, r.Pid, r.Start)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Request ops: the first byte of a client's one message.
const (
	opSecret   = 'S'
	opRegister = 'R'
)

// maxRequest bounds a request message.
const maxRequest = 4 << 10

// Serve answers every connection on ln until ctx ends, then closes ln
// (removing the socket): requests for the secret with src's memfd,
// registrations with reg (nil: refused). Connections are served one at a
// time: each is a single sendmsg.
func Serve(ctx context.Context, ln *net.UnixListener, src Source, reg Registrar) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		_ = serveConn(c, src, reg) // a refused or failed client falls back to the TPM
		c.Close()
	}
}

func serveConn(c *net.UnixConn, src Source, reg Registrar) error {
	_ = c.SetDeadline(time.Now().Add(serveTimeout))
	if err := checkClient(c); err != nil {
		return err
	}
	req := make([]byte, maxRequest+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(req, oob)
	if err != nil {
		return err
	}
	fds, perr := parseRights(oob[:oobn])
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "received")
		defer files[i].Close()
	}
	switch {
	case perr != nil, flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0:
		return errors.New("malformed request")
	case n == 1 && req[0] == opSecret && len(files) == 0:
	case n > 1 && n <= maxRequest && req[0] == opRegister:
		return serveRegister(c, req[1:n], files, reg)
	default:
		return errors.New("unknown request")
	}
	memfd, id, err := src()
	if err != nil {
		return err
	}
	defer memfd.Close()
	// Never hand out something the receiver would (rightly) refuse.
	if err := secretfs.CheckSealed(memfd); err != nil {
		return err
	}
	return SendSecret(c, memfd, id)
}

// registerReply answers a registration.
type registerReply struct {
	Dir   string `json:"dir,omitempty"`
	Error string `json:"error,omitempty"`
}

func serveRegister(c *net.UnixConn, body []byte, fds []*os.File, reg Registrar) error {
	var reply registerReply
	var r Registration
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	switch {
	case reg == nil:
		reply.Error = "this agent serves no API ([api] enable is off where it started)"
	case dec.Decode(&r) != nil:
		reply.Error = "malformed registration"
	case len(fds) != 1:
		reply.Error = fmt.Sprintf("a registration carries the container process's pidfd, this one %d fds (a hook older than the agent?)", len(fds))
	default:
		dir, err := reg.Register(r, fds[0])
		if err != nil {
			reply.Error = err.Error()
		}
		reply.Dir = dir
	}
	data, _ := json.Marshal(reply)
	// The registration may have taken a while (a busy disk); the client
	// waits RegisterTimeout, the reply has its own second.
	_ = c.SetWriteDeadline(time.Now().Add(serveTimeout))
	_, err := c.Write(data)
	return err
}

// RegisterProcess registers container id, whose init process is pid,
// speaking as identity, with the agent at socketPath: it opens a pidfd of
// the process, reads the process's start time while the pidfd holds it,
// and sends both (Register). It returns the directory of the API socket.
func RegisterProcess(ctx context.Context, socketPath, id, identity string, pid int) (string, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return "", fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	start, err := procstat.StartTime(pid)
	if err != nil {
		return "", fmt.Errorf("container process %d: %w", pid, err)
	}
	return Register(ctx, socketPath, Registration{ID: id, Identity: identity, Pid: pid, Start: start}, pidfd)
}

// Register registers a container with the agent at socketPath, sending
// pidfd (of the container's init process, r.Pid) with it, and returns the
// directory of its API socket.
func Register(ctx context.Context, socketPath string, r Registration, pidfd *os.File) (string, error) {
	c, err := dial(ctx, socketPath, RegisterTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	body, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	if _, _, err := c.WriteMsgUnix(append([]byte{opRegister}, body...), unix.UnixRights(int(pidfd.Fd())), nil); err != nil {
		return "", err
	}
	buf := make([]byte, maxRequest)
	n, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	var reply registerReply
	if err := json.Unmarshal(buf[:n], &reply); err != nil {
		return "", errors.New("malformed reply")
	}
	if reply.Error != "" {
		return "", errors.New(reply.Error)
	}
	if !filepath.IsAbs(reply.Dir) {
		return "", errors.New("the agent named no directory")
	}
	return reply.Dir, nil
}

// dial connects to the agent at socketPath, the whole exchange bounded by
// timeout, and checks who listens. The directory's mode should already
// guarantee that; checking costs one getsockopt.
func dial(ctx context.Context, socketPath string, timeout time.Duration) (*net.UnixConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, socketPath)
	if err != nil {
		return nil, err
	}
	c := nc.(*net.UnixConn)
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if err := checkPeer(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// SendSecret writes one message: id with memfd attached. The agent's
// unseal child answers its parent with it too.
func SendSecret(c *net.UnixConn, memfd *os.File, id RecordID) error {
	_, _, err := c.WriteMsgUnix(id.marshal(), unix.UnixRights(int(memfd.Fd())), nil)
	return err
}

// checkPeer reads SO_PEERCRED of c and refuses peers other than uid 0 and
// this process's uid. The kernel reports the uid as seen from this
// process's user namespace (unmapped uids read as the overflow uid), so
// "uid 0" means root of our own namespace, not root of some container's.
func checkPeer(c *net.UnixConn) error {
	var cred *unix.Ucred
	if err := sockopt(c, func(fd int) (err error) {
		cred, err = unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		return err
	}); err != nil {
		return fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return allowUID(cred.Uid, uint32(os.Geteuid()))
}

// sockopt runs get on c's file descriptor.
func sockopt(c *net.UnixConn, get func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var gerr error
	if err := raw.Control(func(fd uintptr) { gerr = get(int(fd)) }); err != nil {
		return err
	}
	return gerr
}

// allowUID is the peer policy: root of this user namespace or ourselves.
func allowUID(peer, self uint32) error {
	if peer == 0 || peer == self {
		return nil
	}
	return fmt.Errorf("%w: uid %d", ErrRefused, peer)
}

// Fetch asks the agent at socketPath for the secret and returns its sealed
// memfd and the id of its record. Anything unexpected (no agent, a peer that is not
// root or us, no fd or more than one, an unsealed memfd, content that is not
// a secret) is an error; the caller then unseals from the TPM instead.
func Fetch(ctx context.Context, socketPath string) (*os.File, RecordID, error) {
	c, err := dial(ctx, socketPath, FetchTimeout)
	if err != nil {
		return nil, RecordID{}, fmt.Errorf("agent: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{opSecret}); err != nil {
		return nil, RecordID{}, fmt.Errorf("write agent: %w", err)
	}
	return ReceiveSecret(c)
}

// ReceiveSecret reads one message (a RecordID and one memfd) from c and
// checks the memfd's seals and content.
func ReceiveSecret(c *net.UnixConn) (*os.File, RecordID, error) {
	// One spare byte and room for several fds, to detect (and refuse)
	// anything but exactly one record id and one fd.
	var msg [msgSize + 1]byte
	oob := make([]byte, unix.CmsgSpace(8*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(msg[:], oob)
	if err != nil {
		return nil, RecordID{}, fmt.Errorf("read agent: %w", err)
	}
	// Go's ReadMsgUnix passes MSG_CMSG_CLOEXEC on Linux, so received fds
	// never leak into anything the hook executes.
	fds, perr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	switch {
	case perr != nil:
		closeAll()
		return nil, RecordID{}, perr
	case flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0:
		closeAll()
		return nil, RecordID{}, errors.New("agent message truncated")
	case n != msgSize:
		closeAll()
		return nil, RecordID{}, fmt.Errorf("agent message is %d bytes, want %d", n, msgSize)
	case len(fds) != 1:
		closeAll()
		return nil, RecordID{}, fmt.Errorf("agent sent %d fds, want 1", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "memfd:northstar-agent")
	if err := checkSecretMemfd(f); err != nil {
		f.Close()
		return nil, RecordID{}, err
	}
	return f, unmarshalRecordID(msg[:msgSize]), nil
}

// parseRights returns every fd in the control messages, so that the caller
// can close them all when it refuses the message.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse agent control message: %w", err)
	}
	var fds []int
	var bad error
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = fmt.Errorf("agent sent an unexpected control message (level %d type %d)", msgs[i].Header.Level, msgs[i].Header.Type)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, bad
}

// checkSecretMemfd verifies the seals and that the content is a secret in
// its in-container form (64 lowercase hex). Plaintext copies are zeroed.
func checkSecretMemfd(f *os.File) error {
	text, err := secretfs.ReadMemfd(f)
	if err != nil {
		return fmt.Errorf("agent memfd: %w", err)
	}
	defer secretfs.Zero(text[:cap(text)])
	sec, err := secretfs.FromHex(text)
	if err != nil {
		return fmt.Errorf("agent memfd: %w", err)
	}
	sec.Zero()
	return nil
}

// FetchCurrent is the one call the hook makes: the agent's memfd, only if
// it carries the secret st holds now (the same sealed blob). Any
// doubt (no agent, a refused or stale one) is an error, and the caller
// unseals from the TPM itself: the agent can never make a start fail, and a
// stale agent cannot serve a rotated-out secret.
func FetchCurrent(ctx context.Context, socketPath string, st *store.Store) (*os.File, error) {
	memfd, id, err := Fetch(ctx, socketPath)
	if err != nil {
		return nil, err
	}
	rec, err := st.Current()
	if err != nil {
		memfd.Close()
		return nil, err
	}
	if want := IDOf(rec); want != id || rec.Sealer != st.Sealer().Name() {
		memfd.Close()
		return nil, fmt.Errorf("agent serves generation %d (blob %x…), the store holds %d (blob %x…)",
			id.Generation, id.BlobDigest[:4], want.Generation, want.BlobDigest[:4])
	}
	return memfd, nil
}
