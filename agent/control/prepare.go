// SPDX-License-Identifier: Apache-2.0

package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// A prepare request ('P' and a JSON PrepareRequest) is the shim's:
// delivery with no hook (DESIGN.md §19). At `start` the shim asks the
// agent to build a container's secret filesystem and API directory
// before the container exists, and adds bind mounts of the directories
// the reply names to the bundle's config.json; the runtime mounts them.
// The agent binds the registration to the container's init process when
// the runtime has created it (it writes Bundle/init.pid).
const opPrepare = 'P'

// InitPidFile is the file in a container's bundle where the runc shim
// (containerd-shim-runc-v2, containerd 1.6 to 2.x: Docker's too) has runc
// write the container's init pid at `runc create` (--pid-file): what the
// agent binds a prepared container to.
const InitPidFile = "init.pid"

// PrepareRequest asks the agent to prepare a container's mounts.
type PrepareRequest struct {
	ID       string `json:"id"`       // the OCI container id
	Identity string `json:"identity"` // who the container speaks as
	// Bundle is the container's bundle directory (absolute), where the
	// runtime's shim has runc write the init process's pid (init.pid).
	Bundle string `json:"bundle"`
	// Secret, when set, asks for the secret's filesystem, the file
	// owned so; API for the container's API directory.
	Secret *Owner `json:"secret,omitempty"`
	API    bool   `json:"api,omitempty"`
	Pod    *Pod   `json:"pod,omitempty"`
	// Measure, with [measure] enable, carries the SHA-256 of the
	// config.json the shim read (Config); the agent adds the root
	// filesystem's identity when runc has created the container.
	Measure *Measurement `json:"measure,omitempty"`
}

// Check refuses a request the agent cannot serve.
func (r PrepareRequest) Check() error {
	if err := (Registration{ID: r.ID, Identity: r.Identity, Pid: 2, Start: 1}).Check(); err != nil {
		return err
	}
	if !filepath.IsAbs(r.Bundle) || filepath.Clean(r.Bundle) != r.Bundle {
		return fmt.Errorf("bundle %q is not a clean absolute path", r.Bundle)
	}
	if r.Pod != nil {
		return r.Pod.Check()
	}
	return nil
}

// PrepareReply names the host directories the runtime bind-mounts at
// /run/northstar and /run/northstar/api ("": none).
type PrepareReply struct {
	SecretDir string `json:"secret_dir,omitempty"`
	APIDir    string `json:"api_dir,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Preparer is the agent's side of prepare requests; a Registrar that is
// one serves them.
type Preparer interface {
	PrepareBundle(req PrepareRequest) (PrepareReply, error)
}

func servePrepare(c *net.UnixConn, body []byte, reg Registrar) error {
	var reply PrepareReply
	var req PrepareRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	p, ok := reg.(Preparer)
	switch {
	case !ok:
		reply.Error = "this agent prepares no containers ([rotation] live and [api] enable are off where it started)"
	case dec.Decode(&req) != nil:
		reply.Error = "malformed prepare request"
	default:
		r, err := p.PrepareBundle(req)
		if err != nil {
			reply = PrepareReply{Error: err.Error()}
		} else {
			reply = r
		}
	}
	data, _ := json.Marshal(reply)
	_ = c.SetWriteDeadline(time.Now().Add(serveTimeout))
	_, err := c.Write(data)
	return err
}

// ErrNoAgent wraps a Prepare that reached no agent (none listening): the
// caller may fall back to the hook.
var ErrNoAgent = errors.New("no agent")

// Prepare asks the agent at socketPath to prepare the container req
// names, and returns the directories to mount.
func Prepare(ctx context.Context, socketPath string, req PrepareRequest) (PrepareReply, error) {
	c, err := dial(ctx, socketPath, RegisterTimeout)
	if err != nil {
		return PrepareReply{}, fmt.Errorf("%w at %s: %v", ErrNoAgent, socketPath, err)
	}
	defer c.Close()
	body, err := json.Marshal(req)
	if err != nil {
		return PrepareReply{}, err
	}
	if _, err := c.Write(append([]byte{opPrepare}, body...)); err != nil {
		return PrepareReply{}, err
	}
	buf := make([]byte, maxRequest)
	n, err := c.Read(buf)
	if err != nil {
		return PrepareReply{}, fmt.Errorf("read reply: %w", err)
	}
	var reply PrepareReply
	switch {
	case json.Unmarshal(buf[:n], &reply) != nil:
		return PrepareReply{}, errors.New("malformed reply")
	case reply.Error != "":
		return PrepareReply{}, errors.New(reply.Error)
	case req.Secret != nil && !filepath.IsAbs(reply.SecretDir), req.API && !filepath.IsAbs(reply.APIDir):
		return PrepareReply{}, errors.New("the agent named no directory to mount")
	}
	return reply, nil
}
