// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
	"github.com/northstar-oci/northstar/agent/control/shimstart"
	"github.com/northstar-oci/northstar/internal/peercred"
	"github.com/northstar-oci/northstar/internal/procstat"
)

// Starter is the agent's side of a start served whole (package
// hookstart): northstar-agent-hook, a hook that links none of the hook's
// work, sends the agent the OCI state, and the agent does the hook's work
// in its own process (package hook's Start) before it answers.
type Starter interface {
	// ServeStart does the hook's work for req. Not served (false) means
	// the agent cannot, and err says why: the hook does the start itself.
	// Served with an error, the start fails with it.
	ServeStart(ctx context.Context, req hookstart.Request) (served bool, err error)
}

func serveStart(c *net.UnixConn, body []byte, reg Registrar) error {
	var served bool
	var err error
	s, ok := reg.(Starter)
	req, derr := hookstart.Decode(body)
	switch {
	case !ok:
		err = errors.New("this agent serves no starts ([rotation] live and [api] enable are off, or it runs without a config file)")
	case derr != nil:
		served, err = true, derr
	default:
		ctx, cancel := context.WithTimeout(context.Background(), RegisterTimeout)
		served, err = s.ServeStart(ctx, req)
		cancel()
	}
	_ = c.SetWriteDeadline(time.Now().Add(serveTimeout))
	_, werr := c.Write(hookstart.Answer(served, err))
	return werr
}

// ShimStarter is the agent's side of a containerd shim start served whole
// (package shimstart): the wrapper's C fast path sends the bundle, and
// the agent does the wrapper's work (the lifecycle check, the container's
// mounts in config.json) before it answers with the delegate to exec.
type ShimStarter interface {
	// ServeShimStart does the wrapper's work for req and returns the
	// delegate the wrapper becomes. Not served (false) means the agent
	// leaves the start to the Go wrapper, and err says why. Served with
	// an error, the start fails with it.
	ServeShimStart(ctx context.Context, req shimstart.Request) (delegate string, served bool, err error)
}

func serveShimStart(c *net.UnixConn, body []byte, reg Registrar) error {
	var (
		delegate string
		served   bool
	)
	s, ok := reg.(ShimStarter)
	req, err := shimstart.Decode(body)
	switch {
	case !ok:
		err = errors.New("this agent serves no shim starts ([rotation] live and [api] enable are off, or it runs without a config file)")
	case err != nil:
		// Not served: nothing was done, the Go wrapper starts the
		// container (a newer wrapper's request, say).
	default:
		if err = checkAskerParent(c, req.Parent); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), RegisterTimeout)
			delegate, served, err = s.ServeShimStart(ctx, req)
			cancel()
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(serveTimeout))
	_, werr := c.Write(shimstart.Answer(delegate, served, err))
	return werr
}

// checkAskerParent refuses a shim start whose parent (the containerd the
// lifecycle check is made against) is not the parent of the process that
// asked: the peer names only itself.
func checkAskerParent(c *net.UnixConn, parent int) error {
	var pid int
	if err := sockopt(c, func(fd int) (err error) {
		pid, err = peercred.PidFD(fd)
		return err
	}); err != nil {
		return err
	}
	if p, err := procstat.Parent(pid); err != nil || p != parent {
		return fmt.Errorf("the shim start names parent %d, not its asker's (pid %d)", parent, pid)
	}
	return nil
}
