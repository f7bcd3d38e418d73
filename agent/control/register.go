// SPDX-License-Identifier: Apache-2.0

package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/northstar-oci/northstar/agent/identity"
	"github.com/northstar-oci/northstar/internal/procstat"
	"golang.org/x/sys/unix"
)

// Registrar is the agent's side of registrations: the hook registers each
// container the agent serves, asking for what it needs (Request), and
// gets it (Reply). pidfd is the hook's pidfd of the container's init
// process, received with the request: it names that process, where a pid
// could have been reused by the time the agent looks.
type Registrar interface {
	Register(req Request, pidfd *os.File) (Reply, error)
}

// Request is a registration and what the container needs from the agent.
type Request struct {
	Registration
	// API asks for the container's own API socket: the reply names the
	// directory to mount at /run/northstar/api.
	API bool `json:"api,omitempty"`
	// Secret asks the agent to build the container's secret filesystem
	// (live rotation, DESIGN.md §12), the file owned so: the reply carries
	// a read-only view of it for the hook to attach at /run/northstar, and
	// the agent keeps the filesystem to rewrite at every rotation.
	Secret *Owner `json:"secret,omitempty"`
	// APIDir, with Secret, asks for the API directory inside the secret's
	// filesystem (where the hook mounts the API socket's directory).
	APIDir bool `json:"api_dir,omitempty"`
	// HookMounts says the hook mounts the secret itself, from inside the
	// container (plain rootless runc's createContainer stage): listed, it
	// cannot follow rotations.
	HookMounts bool `json:"hook_mounts,omitempty"`
	// Pod, for a Kubernetes CRI container, names its pod (the SPIRE
	// issuer's k8s: selectors).
	Pod *Pod `json:"pod,omitempty"`
	// Measure is what the hook read of the container for the agent's
	// measured-container log ([measure] enable), with Secret.
	Measure *Measurement `json:"measure,omitempty"`
}

// Measurement is what identifies a container's configuration and root
// filesystem in the measured-container log (docs/attestation.md).
type Measurement struct {
	// Config is the SHA-256 of the bundle's config.json bytes the hook
	// read (hex).
	Config string `json:"config"`
	// Rootfs is the root filesystem's identity (internal/rootfsid).
	Rootfs string `json:"rootfs"`
}

// Owner is who owns the secret file in the container, in the user
// namespace of the hook and the agent, and its mode.
type Owner struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Mode uint32 `json:"mode"`
}

// Reply is the agent's answer to a Request.
type Reply struct {
	// Dir is the directory of the container's API socket ("" without).
	Dir string
	// Record names the secret the view holds (with Request.Secret).
	Record RecordID
	// View is the read-only mount of the container's secret filesystem
	// (with Request.Secret), for the hook to move onto /run/northstar.
	View *os.File
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

// registerReply is a Reply on the wire; the view travels as its fd.
type registerReply struct {
	Dir        string `json:"dir,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	BlobDigest string `json:"blob_digest,omitempty"` // hex
	Error      string `json:"error,omitempty"`
}

func serveRegister(c *net.UnixConn, body []byte, fds []*os.File, reg Registrar) error {
	var reply registerReply
	var req Request
	var view *os.File
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	switch {
	case reg == nil:
		reply.Error = "this agent takes no registrations"
	case dec.Decode(&req) != nil:
		reply.Error = "malformed registration"
	case len(fds) != 1:
		reply.Error = fmt.Sprintf("a registration carries the container process's pidfd, this one %d fds (a hook older than the agent?)", len(fds))
	default:
		r, err := reg.Register(req, fds[0])
		if err != nil {
			reply.Error = err.Error()
		}
		reply.Dir, view = r.Dir, r.View
		if view != nil {
			defer view.Close()
			reply.Generation, reply.BlobDigest = r.Record.Generation, hex.EncodeToString(r.Record.BlobDigest[:])
		}
	}
	data, _ := json.Marshal(reply)
	// The registration may have taken a while (a busy disk); the client
	// waits RegisterTimeout, the reply has its own second.
	_ = c.SetWriteDeadline(time.Now().Add(serveTimeout))
	var oob []byte
	if view != nil {
		oob = unix.UnixRights(int(view.Fd()))
	}
	_, _, err := c.WriteMsgUnix(data, oob, nil)
	return err
}

// RegisterProcess registers container id, whose init process is pid, with
// the agent at socketPath, asking for what req says (req's Registration is
// filled in here): it opens a pidfd of the process, reads the process's
// start time while the pidfd holds it, and sends both (Register).
func RegisterProcess(ctx context.Context, socketPath string, id, identity string, pid int, req Request) (Reply, error) {
	pidfd, start, err := OpenProcess(pid)
	if err != nil {
		return Reply{}, err
	}
	defer pidfd.Close()
	req.Registration = Registration{ID: id, Identity: identity, Pid: pid, Start: start}
	return Register(ctx, socketPath, req, pidfd)
}

// OpenProcess opens a pidfd of the container's init process pid and reads
// its start time while the pidfd holds it: what a registration sends.
func OpenProcess(pid int) (pidfd *os.File, start uint64, err error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	pidfd = os.NewFile(uintptr(fd), "pidfd")
	if start, err = procstat.StartTime(pid); err != nil {
		pidfd.Close()
		return nil, 0, fmt.Errorf("container process %d: %w", pid, err)
	}
	return pidfd, start, nil
}

// Register sends req to the agent at socketPath with pidfd (of the
// container's init process, req.Pid) and returns its reply. A view it
// returns is the caller's to close.
func Register(ctx context.Context, socketPath string, req Request, pidfd *os.File) (Reply, error) {
	c, err := dial(ctx, socketPath, RegisterTimeout)
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	body, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	if _, _, err := c.WriteMsgUnix(append([]byte{opRegister}, body...), unix.UnixRights(int(pidfd.Fd())), nil); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, maxRequest)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	var reply registerReply
	switch {
	case perr != nil, flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0, json.Unmarshal(buf[:n], &reply) != nil, len(fds) > 1:
		closeAll()
		return Reply{}, errors.New("malformed reply")
	case reply.Error != "":
		closeAll()
		return Reply{}, errors.New(reply.Error)
	case req.API && !filepath.IsAbs(reply.Dir):
		closeAll()
		return Reply{}, errors.New("the agent named no directory")
	case (req.Secret != nil) != (len(fds) == 1):
		closeAll()
		return Reply{}, errors.New("the agent sent no view of the secret's filesystem, or one unasked")
	}
	r := Reply{Dir: reply.Dir}
	if len(fds) == 1 {
		r.View = os.NewFile(uintptr(fds[0]), "view")
		r.Record.Generation = reply.Generation
		if d, err := hex.DecodeString(reply.BlobDigest); err == nil && len(d) == len(r.Record.BlobDigest) {
			copy(r.Record.BlobDigest[:], d)
		}
	}
	return r, nil
}
