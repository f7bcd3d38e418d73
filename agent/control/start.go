// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
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
