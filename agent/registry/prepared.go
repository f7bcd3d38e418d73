// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/nsenter"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
)

// Delivery without a hook (DESIGN.md §19): where the runtime takes mounts
// from whoever shapes the container's spec (the NRI plugin), the agent
// builds the container's secret filesystem and API directory before the
// container exists (Prepare), the runtime bind-mounts them at
// /run/northstar and /run/northstar/api with its own mount code, and
// once the runtime has created the container, before its process runs,
// the agent checks what the runtime mounted and binds the registration to
// the container's init process (Bind), as a hook's registration would be.
// No process is started on the container's start path.

// preparedPrefix starts the names of what Prepare makes in the
// containers' directory.
const preparedPrefix = ".prepared-"

// prepared is a container the agent built mounts for, not yet bound to
// its process. Its registration is listed under a key with no process
// (pid 0), so that rotations and revocations reach its filesystem
// meanwhile; registry.json keeps no such entry across a restart (a
// restarted agent cannot bind it, and the runtime's start fails).
type prepared struct {
	name  string    // its key in Containers.prepared: the NRI container id, or its bundle (shim.go)
	at    time.Time // when Prepare made it
	s     *registration
	key   control.Registration
	stage string // where the secret's view is mounted for the runtime ("": none)
	dir   string // the API directory, under a name of its own until Bind ("": none)
	onFS  bool   // dir is a mount of the API filesystem (apidir.go)
	// measured is what the NRI plugin (Measured) or the shim measured of
	// the container; via names which ("": NRI).
	measured *control.Measurement
	via      string
}

// Prepare builds what the runtime mounts into container id, which will
// speak as identity: with owner, its secret's filesystem (live rotation),
// and with withAPI its API directory. It returns the host paths the
// runtime bind-mounts at /run/northstar and /run/northstar/api ("":
// none). The container is cut off from the secret (and its API closed)
// unless Bind follows before it runs.
func (c *Containers) Prepare(id, identity string, pod *control.Pod, owner *control.Owner, withAPI bool) (secretDir, apiDir string, err error) {
	p, err := c.prepare(id, id, identity, pod, owner, withAPI, false)
	if err != nil || p == nil {
		return "", "", err
	}
	return p.stage, p.dir, nil
}

// prepare is Prepare of container id under name; with listen, the
// container's API sockets listen from now on, their connections held
// until Bind (shim.go). It returns nil when there is nothing to prepare.
func (c *Containers) prepare(name, id, identity string, pod *control.Pod, owner *control.Owner, withAPI, listen bool) (*prepared, error) {
	// The names, checked as a registration's are (the process comes at Bind).
	key := control.Registration{ID: id, Identity: identity}
	if err := (control.Registration{ID: id, Identity: identity, Pid: 2, Start: 1}).Check(); err != nil {
		return nil, err
	}
	if err := c.checkNotRevoked(id); err != nil {
		return nil, err
	}
	if pod != nil {
		if err := pod.Check(); err != nil {
			return nil, err
		}
	}
	switch {
	case withAPI && c.api == nil:
		return nil, errors.New("this agent serves no API ([api] enable is off where it started)")
	case owner != nil && c.secret == nil:
		return nil, errors.New("live rotation is off where this agent started ([rotation] live)")
	case owner == nil && !withAPI:
		return nil, nil
	}
	c.mu.Lock()
	if c.prepared == nil {
		c.prepared = map[string]*prepared{}
	}
	_, dup := c.prepared[name]
	c.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("container %s is being prepared already", id)
	}
	random, err := randomName()
	if err != nil {
		return nil, err
	}
	p := &prepared{name: name, at: time.Now(), key: key, s: &registration{Entry: Entry{Registration: key, API: withAPI, Since: c.gen(), Pod: pod}, pidfd: -1}}
	ok := false
	defer func() {
		if !ok {
			if p.s.fs != nil {
				p.s.fs.Close()
			}
			p.s.closeAPI()
			p.release()
			if p.dir != "" {
				_ = removeAPIDir(p.dir)
			}
		}
	}()
	if withAPI {
		p.dir = filepath.Join(c.dir, preparedPrefix+random)
		if err := os.Mkdir(p.dir, 0o755); err != nil {
			return nil, err
		}
		if p.onFS, err = mountAPIDir(p.dir); err != nil {
			return nil, err
		}
		if err := os.Chmod(p.dir, 0o755); err != nil { // not left to the umask
			return nil, err
		}
	}
	if listen && withAPI {
		p.s.gate = newBindGate()
		if err := c.listenAPI(p.s, p.dir); err != nil {
			return nil, err
		}
	}
	unlock := func() {}
	if owner != nil {
		reply, u, err := c.deliver(p.s, *owner, withAPI)
		if err != nil {
			return nil, err
		}
		unlock = u
		err = p.mountStage(filepath.Join(c.dir, preparedPrefix+random+"-secret"), reply.View)
		reply.View.Close()
		if err != nil {
			unlock()
			return nil, err
		}
	}
	// Listed before any rotation runs (deliver returned holding liveMu).
	c.mu.Lock()
	c.byKey[key] = p.s
	c.prepared[name] = p
	c.mu.Unlock()
	unlock()
	ok = true
	return p, nil
}

// mountStage mounts the read-only view at stage, a new directory, for the
// runtime to bind-mount.
func (p *prepared) mountStage(stage string, view *os.File) error {
	if err := os.Mkdir(stage, 0o700); err != nil {
		return err
	}
	p.stage = stage
	if err := unix.MoveMount(int(view.Fd()), "", unix.AT_FDCWD, stage, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount onto %s: %w", stage, err)
	}
	return nil
}

// release undoes what Prepare made on the host. The filesystem the
// container's mount shows stays as it is.
func (p *prepared) release() {
	if p.stage != "" {
		_ = unix.Unmount(p.stage, unix.MNT_DETACH)
		_ = os.Remove(p.stage)
		p.stage = ""
	}
}

// Bind binds the registration of container id, prepared before, to its
// init process pid, which the runtime has created but not started: it
// checks what the runtime mounted (mount.CheckMounted: where, read-only,
// not shared, reached through no symlink of the image's), names the API
// directory after the registration, serves its sockets and watches the
// process. A container that was not prepared is none of the agent's:
// false. Any error leaves the container cut off (Forget); the caller
// fails its start.
func (c *Containers) Bind(id string, pid int) (bool, error) {
	c.mu.Lock()
	p := c.prepared[id]
	c.mu.Unlock()
	if p == nil {
		return false, nil
	}
	if err := c.bind(p, pid); err != nil {
		c.Forget(id)
		return true, fmt.Errorf("container %s: %w", p.key.ID, err)
	}
	return true, nil
}

func (c *Containers) bind(p *prepared, pid int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	reg := p.key
	reg.Pid = pid
	if reg.Start, err = procstat.StartTime(pid); err != nil {
		unix.Close(pidfd)
		return fmt.Errorf("container process %d: %w", pid, err)
	}
	if err := checkPidfd(pidfd, reg); err != nil {
		unix.Close(pidfd)
		return err
	}
	mountID, err := p.check(pidfd)
	if err != nil {
		unix.Close(pidfd)
		return err
	}
	// Its sockets answer its own mount namespace only, and it may not
	// share a PID namespace with another identity (peer.go).
	mntNS, pidNS, err := namespacesOf(pidfd)
	if err == nil {
		err = c.checkPIDShare(reg, pidNS)
	}
	if err != nil {
		unix.Close(pidfd)
		return err
	}
	if p.dir != "" {
		if err := p.rename(c.dirOf(reg)); err != nil {
			unix.Close(pidfd)
			return err
		}
	}
	// Under liveMu from the pending key's removal until the registration
	// is listed: no rotation misses it.
	c.liveMu.Lock()
	c.mu.Lock()
	s := p.s
	delete(c.byKey, p.key)
	delete(c.prepared, p.name)
	s.Registration, s.pidfd = reg, pidfd
	s.mntNS, s.pidNS = mntNS, pidNS
	delivered, measured := s.fs != nil, p.measured
	if delivered {
		s.MountID = mountID
	}
	c.mu.Unlock()
	err = c.serve(s, false)
	c.liveMu.Unlock()
	if err != nil { // serve closed pidfd and s.fs
		if p.dir != "" {
			_ = removeAPIDir(p.dir)
		}
		p.release()
		return err
	}
	// Connections held until now are the container's if they come from
	// its mount namespace (shim.go).
	s.gate.open(mntNS)
	// The runtime's mount is the container's now; the staging one goes.
	p.release()
	if err := c.record(s.Entry); err != nil {
		c.gone(reg, false)
		return fmt.Errorf("save the registration: %w", err)
	}
	if err := c.Audit("container-registered", map[string]string{"id": reg.ID, "identity": reg.Identity, "pid": strconv.Itoa(pid),
		"generation": strconv.FormatUint(c.gen(), 10)}); err != nil {
		c.gone(reg, false)
		return fmt.Errorf("audit log: %w", err)
	}
	if delivered {
		via := "nri"
		if p.via != "" {
			via = p.via
		}
		if err := c.measure(reg, via, measured); err != nil {
			c.gone(reg, false)
			return err
		}
	}
	return nil
}

// rename names p's API directory dir, the registration's. A mount point
// cannot be renamed: the API filesystem is bound at dir, the same
// filesystem the runtime bound in the container, and its prepared name
// goes.
func (p *prepared) rename(dir string) error {
	if !p.onFS {
		if err := os.Rename(p.dir, dir); err != nil {
			return err
		}
		p.dir = dir
		return nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(p.dir, dir, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(dir)
		return fmt.Errorf("bind the API filesystem at %s: %w", dir, err)
	}
	_ = removeAPIDir(p.dir)
	p.dir = dir
	return nil
}

// check checks, in the mount namespace of the container whose init
// process pidfd is, the mounts the runtime made of p's filesystem and API
// directory, and returns the unique id of the secret's mount there.
func (p *prepared) check(pidfd int) (uint64, error) {
	open := func(path string) (*os.File, error) {
		return os.OpenFile(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	var secret, api *os.File
	var err error
	if p.stage != "" {
		if secret, err = open(p.stage); err != nil {
			return 0, err
		}
		defer secret.Close()
	}
	if p.dir != "" {
		if api, err = open(p.dir); err != nil {
			return 0, err
		}
		defer api.Close()
	}
	var id uint64
	err = nsenter.InMountNamespaceOf(pidfd, func() error {
		root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer root.Close()
		if secret != nil {
			if id, err = mount.CheckMounted(root, secretfs.Dir, secret, nil); err != nil {
				return err
			}
		}
		if api != nil {
			// On the secret's filesystem when there is one; else where
			// the secret's directory would be (an API-only container).
			if _, err := mount.CheckMounted(root, secretfs.Dir+"/"+mount.APIDir, api, secret); err != nil {
				return err
			}
		}
		return nil
	})
	return id, err
}

// preparedTTL is how long a prepared container may wait for its start:
// the kubelet starts a container right after creating it, and a creation
// that failed after the plugin answered (another plugin refused it, the
// runtime failed) sends no RemoveContainer; a kubelet retrying such a
// creation must not pile up filesystems. A container started later than
// this fails its start, naming the agent's restart or its absence.
const preparedTTL = 10 * time.Minute

// sweepPrepared forgets the prepared containers older than preparedTTL.
func (c *Containers) sweepPrepared() {
	c.mu.Lock()
	var old []string
	for id, p := range c.prepared {
		if time.Since(p.at) > preparedTTL {
			old = append(old, id)
		}
	}
	c.mu.Unlock()
	for _, id := range old {
		c.Forget(id)
	}
}

// forgetPrepared forgets every container not bound yet (Close).
func (c *Containers) forgetPrepared() {
	c.mu.Lock()
	var ids []string
	for id := range c.prepared {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.Forget(id)
	}
}

// Forget drops container id if it was prepared and not bound (its
// creation or start failed, or it was removed before it started): its
// filesystem and directories go.
func (c *Containers) Forget(id string) {
	c.mu.Lock()
	p := c.prepared[id]
	delete(c.prepared, id)
	if p != nil {
		delete(c.byKey, p.key)
	}
	fs := p.takeFS()
	c.mu.Unlock()
	if p == nil {
		return
	}
	if fs != nil {
		// Emptied first: a container that runs although its start
		// should have failed (the shim's, whose bind came too late)
		// keeps no secret.
		_ = fs.Revoke()
		fs.Close()
	}
	p.s.gate.open(control.NS{}) // none: held connections are refused
	p.s.closeAPI()
	p.release()
	if p.dir != "" {
		_ = removeAPIDir(p.dir)
	}
}

// takeFS takes p's filesystem handle (nil p: none). The caller holds c.mu.
func (p *prepared) takeFS() interface {
	Revoke() error
	Close() error
} {
	if p == nil || p.s.fs == nil {
		return nil
	}
	fs := p.s.fs
	p.s.fs = nil
	return fs
}

// randomName is 16 random hex digits: the names of what Prepare makes
// are not derived from anything a container controls.
func randomName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// removeStale removes what an earlier agent prepared for containers it
// never bound (it stopped between their creation and their start, which
// fails now: Bind knows nothing of them): its staging mounts, which
// restore's removal of unknown names cannot take away, and directories.
func (c *Containers) removeStale() {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), preparedPrefix) {
			continue
		}
		_ = removeAPIDir(filepath.Join(c.dir, e.Name()))
	}
}
