// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/internal/rootfsid"
)

// Delivery with no hook through the shim (DESIGN.md §19). The shim
// (containerd-shim-northstar-v2) asks at `start` for a container's mounts
// (PrepareBundle) and adds them to the bundle's config.json; runc mounts
// them at `runc create`. Nothing of northstar's runs between `runc
// create` and `runc start`, where NRI's StartContainer binds, so the
// agent learns the container's init process from the bundle: the runc
// shim has runc write its pid to <bundle>/init.pid when `runc create` is
// done. The agent watches the bundle directory (inotify) and binds then,
// as Bind does for NRI: the runtime's mounts checked in the container's
// mount namespace, the registration bound to the init process's pidfd.
//
// Binding races the container's start (the engine's `runc start` comes
// right after `runc create`). So that the race decides nothing:
//   - the container's API sockets listen from PrepareBundle on, and a
//     connection is held until the bind names the container's mount
//     namespace (bindGate): one from any other is refused then;
//   - a container whose mounts fail the check is killed (its init, by
//     pidfd), whether or not it started; until then its secret is where
//     runc mounted it, inside its own rootfs and mount namespace;
//   - rotations and revocations reach a prepared container's filesystem
//     before the bind (its registration is listed, with no process).
// A container that never gets created (its bundle goes) is forgotten.

// InitPidFile is where runc writes a prepared container's init pid in
// its bundle (the protocol's).
const InitPidFile = control.InitPidFile

// bindWait bounds how long a connection to a prepared container's socket
// waits for the bind: the process that connects runs after `runc start`,
// which comes after `runc create` wrote the pid the bind waits for.
const bindWait = 10 * time.Second

// bindGate holds a prepared container's connections until Bind names its
// mount namespace.
type bindGate struct {
	ready chan struct{}
	once  sync.Once
	want  control.NS
}

func newBindGate() *bindGate { return &bindGate{ready: make(chan struct{})} }

// open lets the held connections through, those from ns (the zero NS:
// none). Only the first call counts. A nil gate is open.
func (g *bindGate) open(ns control.NS) {
	if g == nil {
		return
	}
	g.once.Do(func() {
		g.want = ns
		close(g.ready)
	})
}

// wait returns the container's mount namespace once it is bound (the
// zero NS if it never is, within bindWait).
func (g *bindGate) wait() control.NS {
	select {
	case <-g.ready:
		return g.want
	case <-time.After(bindWait):
		return control.NS{}
	}
}

// PrepareBundle implements control.Preparer: the shim's prepare request.
func (c *Containers) PrepareBundle(req control.PrepareRequest) (control.PrepareReply, error) {
	if err := req.Check(); err != nil {
		return control.PrepareReply{}, err
	}
	pidFile := filepath.Join(req.Bundle, InitPidFile)
	if _, err := os.Lstat(pidFile); !errors.Is(err, os.ErrNotExist) {
		return control.PrepareReply{}, fmt.Errorf("%s exists before the container does", pidFile)
	}
	// Watched before anything is made: no pid is missed.
	w, err := watchBundle(req.Bundle)
	if err != nil {
		return control.PrepareReply{}, err
	}
	name := "bundle:" + req.Bundle
	p, err := c.prepare(name, req.ID, req.Identity, req.Pod, req.Secret, req.API, true)
	if err != nil || p == nil {
		w.Close()
		return control.PrepareReply{}, err
	}
	if req.Measure != nil {
		c.mu.Lock()
		p.measured, p.via = &control.Measurement{Config: req.Measure.Config}, "shim"
		c.mu.Unlock()
	}
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		defer w.Close()
		c.awaitInit(name, req.Bundle, w)
	}()
	return control.PrepareReply{SecretDir: p.stage, APIDir: p.dir}, nil
}

// watchBundle returns an inotify of the bundle directory: files written
// or renamed into it, and its removal. Non-blocking, so that reads wait
// in the runtime's poller and honour deadlines.
func watchBundle(bundle string) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, bundle, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_DELETE_SELF|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch the bundle %s: %w", bundle, err)
	}
	return os.NewFile(uintptr(fd), "inotify"), nil
}

// awaitInit binds the container prepared as name when its init pid
// appears in bundle, and forgets it when the bundle goes, when it waited
// preparedTTL, or when the agent stops.
func (c *Containers) awaitInit(name, bundle string, w *os.File) {
	until := time.Now().Add(preparedTTL)
	buf := make([]byte, 4096)
	for {
		if pid, ok := readInitPid(filepath.Join(bundle, InitPidFile)); ok {
			c.bindShim(name, pid)
			return
		}
		if _, err := os.Lstat(bundle); err != nil || time.Now().After(until) {
			c.Forget(name)
			return
		}
		select {
		case <-c.stop:
			return // Close forgets it
		default:
		}
		// An event, or a second: look again.
		_ = w.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = w.Read(buf)
	}
}

// readInitPid reads the pid runc wrote (it writes a temporary file and
// renames it: a file there is whole).
func readInitPid(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid, err == nil && pid > 1
}

// bindShim binds the prepared container to its init process pid. If the
// check of its mounts (or anything else) fails, the container is cut off
// (Bind forgets it) and its init process killed: it must not run with a
// secret the agent does not follow, mounted where its image sent it.
func (c *Containers) bindShim(name string, pid int) {
	// The pidfd first: the process killed below is the one that was bound.
	pidfd, perr := unix.PidfdOpen(pid, 0)
	if perr == nil {
		defer unix.Close(pidfd)
	}
	c.measureRootfs(name, pid)
	_, err := c.Bind(name, pid)
	if err == nil {
		return
	}
	_ = c.Audit("container-refused", map[string]string{"bundle": strings.TrimPrefix(name, "bundle:"), "pid": strconv.Itoa(pid), "why": err.Error()})
	if perr != nil || !isContainerInit(pid, pidfd) {
		fmt.Fprintf(c.log, "agent: %v; its process %d is gone or not the container's\n", err, pid)
		return
	}
	fmt.Fprintf(c.log, "agent: %v; killing its process %d\n", err, pid)
	_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
}

// measureRootfs adds to what the shim measured of the container prepared
// as name the identity of its root filesystem, as its init process pid
// sees it (internal/rootfsid). A rootfs that cannot be named is logged as
// such, as the hook does.
func (c *Containers) measureRootfs(name string, pid int) {
	c.mu.Lock()
	p := c.prepared[name]
	want := p != nil && p.measured != nil
	c.mu.Unlock()
	if !want {
		return
	}
	id, err := rootfsid.Of(fmt.Sprintf("/proc/%d/root", pid), fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		id = "unknown: " + err.Error()
	}
	c.mu.Lock()
	p.measured.Rootfs = id
	c.mu.Unlock()
}

// isContainerInit reports whether pid is a process runc created for a
// container, not whatever else a pid file could name: its parent is the
// runc that created it (still exiting) or the runc shim (the subreaper it
// is handed to), and it is not in the agent's mount namespace. The
// parent is known by its name: runc makes itself non-dumpable, so its
// /proc/PID/exe cannot be read from a user namespace.
func isContainerInit(pid, pidfd int) bool {
	ppid, err := procstat.Parent(pid)
	if err != nil {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid))
	if err != nil {
		return false
	}
	// comm is at most 15 bytes: "containerd-shim" of containerd-shim-runc-v2.
	if name := strings.TrimSpace(string(comm)); name != "runc" && name != "containerd-shim" {
		return false
	}
	ns, err := control.MountNSOf(pidfd)
	self, serr := control.SelfNS("mnt")
	return err == nil && serr == nil && ns != self
}
