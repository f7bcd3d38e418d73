// SPDX-License-Identifier: Apache-2.0

package nri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	nrilog "github.com/containerd/nri/pkg/log"
	"github.com/containerd/nri/pkg/stub"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/peercred"
)

// Options are what Run needs.
type Options struct {
	Socket     string     // the runtime's NRI socket ([nri] socket)
	Hook       specs.Hook // the hook entry to add (entry.New)
	APIEnabled bool       // [api] enable
	// APIEnv ("NAME=value", entry.APIEnv) joins the environment of every
	// container that gets the API, unless it sets the name itself.
	APIEnv []string
	// Rotate is called with the pid of the runtime at the other end of
	// every new connection, before the plugin registers: it starts a new
	// lifecycle if that runtime is not the one the secret was made for
	// (store.RotateIfLifecycleChanged), so no container of a restarted
	// runtime gets the hook before its secret exists. An error keeps the
	// plugin unregistered until the next attempt. Nil: never rotate.
	Rotate func(ctx context.Context, runtimePid int) error
	Log    io.Writer // one line per connection, loss and error; never a secret
	// Deliver, when set, has the agent build each container's mounts and
	// the runtime mount them: no hook runs (DESIGN.md §19), except for a
	// container with a user namespace of its own, or for the secret
	// without Live ([rotation] live: the agent delivers it). SecretMode
	// is the secret file's mode unless an annotation says otherwise.
	Deliver    Deliverer
	Live       bool
	SecretMode os.FileMode
	// IdentityAnyNamespace ([api] identity_any_namespace) honours an
	// explicit io.northstar.identity outside the pod's namespace.
	IdentityAnyNamespace bool
}

// Reconnection backoff: a runtime restart takes about a second, and every
// moment without the plugin is a moment pods start without the secret
// (or, with required_plugins, fail). Trying to connect to a unix socket
// that is not there costs next to nothing.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = time.Second
)

// Run connects to the NRI socket, registers the plugin and serves it;
// when the runtime closes the connection (it restarted, or dropped the
// plugin) it connects again, until ctx ends. It returns nil then.
func Run(ctx context.Context, opts Options) error {
	p := &plugin{hook: opts.Hook, apiEnabled: opts.APIEnabled, apiEnv: opts.APIEnv,
		deliver: opts.Deliver, live: opts.Live, secretMode: opts.SecretMode, anyNamespace: opts.IdentityAnyNamespace}
	// NRI's packages log through a process-wide logger (logrus on stderr
	// unless told otherwise); the agent's log is opts.Log.
	nrilog.Set(quietLogger{opts.Log})
	backoff := minBackoff
	lastErr := ""
	for {
		served, err := session(ctx, p, opts)
		if ctx.Err() != nil {
			return nil
		}
		if served {
			backoff = minBackoff
		}
		// One line per distinct failure, not one per attempt: a host
		// whose containerd is down would otherwise fill the log.
		if msg := err.Error(); msg != lastErr {
			fmt.Fprintf(opts.Log, "nri: %s; retrying\n", msg)
			lastErr = msg
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// errClosed: the runtime closed a registered plugin's connection.
var errClosed = errors.New("the runtime closed the connection")

// session is one connection: dial, rotate for the runtime at the other
// end, register, serve until the connection closes. served says whether
// the plugin got registered.
func session(ctx context.Context, p *plugin, opts Options) (served bool, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", opts.Socket)
	if err != nil {
		return false, fmt.Errorf("connect %s: %w", opts.Socket, unwrap(err))
	}
	pid, err := peerPid(conn)
	if err != nil {
		conn.Close()
		return false, fmt.Errorf("%s: %w", opts.Socket, err)
	}
	if opts.Rotate != nil {
		if err := opts.Rotate(ctx, pid); err != nil {
			conn.Close()
			return false, fmt.Errorf("runtime pid %d: %w", pid, err)
		}
	}
	closed := make(chan struct{})
	var once sync.Once
	s, err := stub.New(p,
		stub.WithPluginName(Name), stub.WithPluginIdx(Index),
		stub.WithConnection(conn),
		stub.WithOnClose(func() { once.Do(func() { close(closed) }) }),
		stub.WithLogger(quietLogger{opts.Log}))
	if err != nil {
		conn.Close()
		return false, fmt.Errorf("plugin: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		conn.Close()
		return false, fmt.Errorf("register with the runtime at %s: %w", opts.Socket, err)
	}
	fmt.Fprintf(opts.Log, "nri: plugin %s-%s registered with the runtime (pid %d) at %s\n", Index, Name, pid, opts.Socket)
	select {
	case <-closed:
		s.Stop()
		return true, errClosed
	case <-ctx.Done():
		s.Stop()
		return true, ctx.Err()
	}
}

// peerPid is the pid of the process that listens at the other end of a
// unix connection (SO_PEERCRED: the runtime, which created the socket).
func peerPid(conn net.Conn) (int, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var pid int
	var perr error
	if err := raw.Control(func(fd uintptr) { pid, perr = peercred.PidFD(int(fd)) }); err != nil {
		return 0, err
	}
	return pid, perr
}

// unwrap shortens "dial unix /x: connect: no such file or directory" to
// the errno.
func unwrap(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// quietLogger passes NRI's warnings and errors on and drops its progress
// lines (several per connection; the plugin says what matters itself).
type quietLogger struct{ w io.Writer }

func (quietLogger) Debugf(context.Context, string, ...any) {}
func (quietLogger) Infof(context.Context, string, ...any)  {}
func (l quietLogger) Warnf(_ context.Context, format string, args ...any) {
	fmt.Fprintf(l.w, "nri: warning: "+format+"\n", args...)
}
func (l quietLogger) Errorf(_ context.Context, format string, args ...any) {
	fmt.Fprintf(l.w, "nri: "+format+"\n", args...)
}
