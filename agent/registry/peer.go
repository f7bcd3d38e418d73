// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
)

// Who may connect to a container's sockets (DESIGN.md §15).
//
// The socket a request arrives on names the caller, because only that
// container has the directory mounted. Not quite: a process that shares
// a PID namespace with the container (Kubernetes shareProcessNamespace,
// podman --pid container:X, hostPID) reaches the container's mounts
// through /proc/<pid>/root/run/northstar/api/ and connects to its socket
// as the container. So every connection is checked when it is accepted:
// the connecting process (SO_PEERPIDFD, the process itself, never a pid
// that could be reused) must be in the container's mount namespace, or
// in the agent's own (host root, which can reach everything anyway).
//
// What this does not defend: a process that joins the container's mount
// namespace (setns, which needs CAP_SYS_ADMIN over it) or ptraces one of
// its processes (same PID namespace, same uid, no Yama) is the container
// as far as any kernel check goes. checkPIDShare keeps containers of
// different identities out of one PID namespace, so that ptrace across
// identities needs the host's privileges.

// peerListener accepts only connections from processes in the mount
// namespace want (or the agent's own); the others are closed at once and
// counted into the socket's refusal line.
type peerListener struct {
	net.Listener
	want, self control.NS
	gate       *bindGate   // nil, or where want comes from once the container is bound
	srv        *api.Server // set before Serve; counts refusals
}

// listen listens on the unix socket at path for the container whose
// init's mount namespace is mntNS, or, with gate, the one gate opens
// with (shim.go).
func (c *Containers) listen(path string, mntNS control.NS, gate *bindGate) (*peerListener, error) {
	self, err := control.SelfNS("mnt")
	if err != nil {
		return nil, fmt.Errorf("the agent's mount namespace: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return &peerListener{Listener: ln, want: mntNS, self: self, gate: gate}, nil
}

// errOtherNamespace is why a connection is refused.
var errOtherNamespace = errors.New("the peer is not in the container's mount namespace (another container sharing its PID namespace?)")

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := conn.(*net.UnixConn)
		if !ok {
			conn.Close()
			continue
		}
		want := l.want
		if l.gate != nil {
			want = l.gate.wait()
		}
		ns, err := control.PeerMountNS(uc)
		if err == nil && (ns == want || ns == l.self) && want != (control.NS{}) {
			return conn, nil
		}
		if err == nil {
			err = errOtherNamespace
		}
		conn.Close()
		if l.srv != nil {
			l.srv.CountRefusal(http.StatusForbidden, "connect", err.Error())
		}
	}
}

// namespacesOf are the mount and PID namespaces of the process of pidfd.
func namespacesOf(pidfd int) (mnt, pid control.NS, err error) {
	if mnt, err = control.MountNSOf(pidfd); err != nil {
		return mnt, pid, err
	}
	pid, err = control.PidNSOf(pidfd)
	return mnt, pid, err
}

// checkPIDShare refuses a container r whose init is in PID namespace
// pidNS when a registered container of another identity is in it too.
// Containers in one PID namespace can read each other's /run/northstar
// through /proc (the secret file needs no connection), and ptrace each
// other: they are one principal. Of one identity they may share
// (replicas, a pod given one io.northstar.identity), and are then revoked
// together (revocations).
//
// Not checked: processes in the agent's own PID namespace (hostPID
// containers, host processes), which see every container's processes
// whatever we refuse; a hostPID container is as privileged as the host's
// root for this purpose (Kubernetes' baseline Pod Security Standard
// forbids it). Their connections to another container's sockets are
// still refused (peerListener).
func (c *Containers) checkPIDShare(r control.Registration, pidNS control.NS) error {
	self, err := control.SelfNS("pid")
	if err != nil {
		return fmt.Errorf("the agent's PID namespace: %w", err)
	}
	if pidNS == self {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.byKey {
		if o.pidNS == pidNS && o.Identity != r.Identity {
			return fmt.Errorf("container %s (identity %q) shares its PID namespace with container %s (identity %q), and each could speak as the other through /proc; give them one io.northstar.identity, or PID namespaces of their own", r.ID, r.Identity, o.ID, o.Identity)
		}
	}
	return nil
}
