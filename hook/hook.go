// SPDX-License-Identifier: Apache-2.0

// Package hook is the northstar OCI hook: it reads the OCI state from stdin
// and the bundle's config.json, takes the lifecycle secret out of the store,
// and materializes it read-only at /run/northstar/secret inside the
// container before the container's process starts.
//
// It runs at one of three stages:
//   - createRuntime (or prestart on older runtimes): in the runtime's
//     namespaces; the hook joins the container's mount namespace on a locked
//     thread to attach the mount.
//   - createContainer: run by the container's init process itself, already
//     inside the container's namespaces (the only way for plain rootless
//     runc, where setns into the container's mount namespace is refused).
//
// The stage is recognised without configuration: at createContainer the
// hook's parent is the container process whose pid the state names.
package hook

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/hook/delivery"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/hook/hostwide"
	"github.com/northstar-oci/northstar/internal/capped"
	"github.com/northstar-oci/northstar/internal/idmap"
	"github.com/northstar-oci/northstar/internal/nsenter"
	"github.com/northstar-oci/northstar/internal/procstat"
	"github.com/northstar-oci/northstar/remedy"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
	"github.com/northstar-oci/northstar/store"
)

// ErrUsage marks command-line errors (exit code 2).
var ErrUsage = errors.New("usage")

// Run is the hook's main: args without the program name, the state on stdin.
// Errors are one line, "<what>: <why>[; <remedy>]", and never contain secret
// material.
func Run(ctx context.Context, args []string, stdin io.Reader) error {
	return remedy.Explain(run(ctx, args, stdin))
}

func run(ctx context.Context, args []string, stdin io.Reader) error {
	fs := flag.NewFlagSet("northstar-hook", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "config file (default $NORTHSTAR_CONFIG or "+config.DefaultPath+")")
	hostWide := fs.Bool(entry.HostWideFlag[2:], false, "the hook file is the host's, not the caller's: a rootless caller with no config of its own and no access to the host's state is left alone (see package hook/hostwide)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v (northstar-hook [--config PATH] < state.json)", ErrUsage, err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q (northstar-hook [--config PATH] < state.json)", ErrUsage, fs.Arg(0))
	}

	data, err := capped.ReadAll(stdin, maxStateSize, "state")
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	in, err := ReadInput(data)
	if err != nil {
		return err
	}
	cfgPath := config.Discover(*configPath)
	if *hostWide {
		var skip bool
		if cfgPath, skip, err = hostwide.Config(cfgPath); err != nil || skip {
			return err
		}
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	in.InContainer = os.Getppid() == in.State.Pid
	return Start(ctx, cfg, in, SocketAgent(cfg.Agent.Socket))
}

// Input is what the hook decides a start from: the runtime's state, the
// bundle's config.json as read, and where the hook runs.
type Input struct {
	State     *specs.State
	Spec      *specs.Spec // the parts of config.json the hook reads (parseSpec)
	SpecBytes []byte      // config.json as read (the measured-container log hashes it)
	Rootfs    string      // the container's root filesystem on the host
	// InContainer: the hook runs inside the container (createContainer),
	// its parent the container's process.
	InContainer bool
}

// ReadInput parses the OCI state the runtime gave the hook and reads its
// bundle's config.json.
func ReadInput(state []byte) (Input, error) {
	st, err := ParseState(state)
	if err != nil {
		return Input{}, fmt.Errorf("read state: %w", err)
	}
	spec, rootfs, specBytes, err := loadSpec(st.Bundle)
	if err != nil {
		return Input{}, fmt.Errorf("read bundle: %w", err)
	}
	return Input{State: st, Spec: spec, SpecBytes: specBytes, Rootfs: rootfs}, nil
}

// Agent is the hook's way to the agent: its control socket, from the
// hook's own process (SocketAgent), or the agent's registry itself, where
// the agent serves a start whole (package hook/served, for
// northstar-agent-hook).
type Agent interface {
	// Register registers container id, whose init process is pid, as
	// identity, asking for what req says (its Registration is filled in).
	Register(ctx context.Context, id, identity string, pid int, req control.Request) (control.Reply, error)
	// Current returns a sealed memfd of the secret st holds now, or an
	// error when the agent has no such secret to give.
	Current(ctx context.Context, st *store.Store) (*os.File, error)
}

// SocketAgent is the agent listening on the control socket at this path.
type SocketAgent string

func (s SocketAgent) Register(ctx context.Context, id, identity string, pid int, req control.Request) (control.Reply, error) {
	return control.RegisterProcess(ctx, string(s), id, identity, pid, req)
}

func (s SocketAgent) Current(ctx context.Context, st *store.Store) (*os.File, error) {
	return control.FetchCurrent(ctx, string(s), st)
}

// Start puts the secret (and the container's API) into the container in
// names, as cfg says: the hook's whole work once it has read its input.
// agent is how it reaches the agent ([agent] socket set).
func Start(ctx context.Context, cfg *config.Config, in Input, agent Agent) error {
	state, spec, rootfs, inContainer := in.State, in.Spec, in.Rootfs, in.InContainer
	policy, err := delivery.PolicyFor(spec, cfg.SecretMode())
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	// io.northstar.secret.disable opts a container out of the shared
	// secret only: with the API on, it keeps its own identity (an
	// API-only container, which nothing is unsealed for).
	if policy.Skip || policy.Disabled && !cfg.API.Enable {
		return nil
	}
	if err := checkRevoked(cfg, state.ID); err != nil {
		return err
	}
	if err := delivery.CheckIdentityNamespace(spec, cfg.API.IdentityAnyNamespace); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	// The agent delivers the secret itself, and rotates it in the running
	// container, when live rotation is on (DESIGN.md §12). Not inside the
	// container: the agent serves only its own mount namespace.
	live := cfg.Agent.Socket != "" && cfg.Rotation.Live && !policy.Disabled
	if !inContainer && splitStages(spec) {
		// Plain rootless runc with northstar at createRuntime and at
		// createContainer: this stage cannot enter the container, and the
		// other cannot reach the agent (it serves only its own mount
		// namespace). So this one registers, and the other mounts.
		if !cfg.API.Enable && !live {
			return nil
		}
		_, err := register(ctx, cfg.Agent.Socket, agent, spec, state.ID, state.Pid, cfg.API.Enable, control.Request{HookMounts: live})
		return err
	}
	var owner mount.Owner
	if !policy.Disabled {
		if owner, err = ownerFor(state.Pid, policy, inContainer); err != nil {
			return fmt.Errorf("owner: %w", err)
		}
	}

	// The registration first: it is cheap, an agent that is down must stop
	// an API container's start before anything is unsealed, and with live
	// rotation it brings the secret's filesystem.
	var apiDir string
	var mnt *mount.Mount
	switch {
	case cfg.API.Enable && inContainer:
		apiTree, err := registeredAPI(cfg.Agent.Socket, spec, state.ID)
		if err != nil {
			return err
		}
		if apiTree != nil {
			defer apiTree.Close()
			return mountIn(ctx, cfg, nil, rootfs, state.Pid, inContainer, policy.Disabled, owner, apiTree)
		}
	case live && !inContainer:
		var m *control.Measurement
		if cfg.Measure.Enable {
			m = measurement(in.SpecBytes, rootfs)
		}
		mnt, apiDir, err = deliver(ctx, cfg, agent, spec, state.ID, state.Pid, owner, m)
		if err != nil {
			return err
		}
	case cfg.API.Enable:
		if apiDir, err = register(ctx, cfg.Agent.Socket, agent, spec, state.ID, state.Pid, true, control.Request{}); err != nil {
			return err
		}
	}
	var apiTree *os.File
	if apiDir != "" {
		if apiTree, err = mount.OpenAPITree(apiDir); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		defer apiTree.Close()
	}
	if mnt != nil {
		defer mnt.Close()
		return attachMount(mnt, rootfs, state.Pid, inContainer, apiTree)
	}
	if cfg.Agent.Socket == "" || inContainer {
		// None, or one that refuses peers in other mount namespaces: do
		// not ask.
		agent = nil
	}
	return mountIn(ctx, cfg, agent, rootfs, state.Pid, inContainer, policy.Disabled, owner, apiTree)
}

// mountIn builds the secret's filesystem here (the secret from the agent's
// memfd or unsealed from the TPM; none for an API-only container) and
// attaches it, with apiTree (nil: none), in the container.
func mountIn(ctx context.Context, cfg *config.Config, agent Agent, rootfs string, pid int, inContainer, noSecret bool, owner mount.Owner, apiTree *os.File) error {
	var mnt *mount.Mount
	var err error
	switch {
	case noSecret && apiTree == nil:
		return nil // out of both
	case noSecret:
		if mnt, err = mount.NewAPIOnly(); err != nil {
			return fmt.Errorf("mount: %w", err)
		}
	default:
		st, err := configured.Store(cfg)
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		if mnt, err = buildMount(ctx, st, agent, owner, apiTree != nil); err != nil {
			return err
		}
	}
	defer mnt.Close()
	return attachMount(mnt, rootfs, pid, inContainer, apiTree)
}

// deliver registers the container with the agent, which builds its secret
// filesystem (live rotation) and gives the API directory if the container
// has the API. An agent that cannot deliver (stale, unreachable) leaves
// the hook to build the filesystem itself, and the container will not
// follow rotations; an API container still needs the agent for its
// socket, and fails to start without it.
func deliver(ctx context.Context, cfg *config.Config, agent Agent, spec *specs.Spec, id string, pid int, owner mount.Owner, m *control.Measurement) (*mount.Mount, string, error) {
	identity, err := delivery.IdentityFor(spec, id)
	if err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	apiOff, err := delivery.APIDisabled(spec)
	if err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	withAPI := cfg.API.Enable && !apiOff
	req := control.Request{API: withAPI, APIDir: withAPI, Secret: &control.Owner{UID: owner.UID, GID: owner.GID, Mode: uint32(owner.Mode)}, Pod: delivery.PodFor(spec), Measure: m}
	reply, err := agent.Register(ctx, id, identity, pid, req)
	// The hook trusts the agent only with the store's current secret, as
	// with a fetched memfd. A rotation that ran between the agent's answer
	// and the check here reaches the container's filesystem in
	// milliseconds (it is registered): ask again, which answers with what
	// it holds then.
	for try := 0; err == nil; try++ {
		if err = current(cfg, reply.Record); err == nil {
			return mount.FromFile(reply.View), reply.Dir, nil
		}
		reply.View.Close()
		if try == deliverRetries {
			// Declined: a registration without the secret tells the
			// agent the container does not have its filesystem, so that
			// it is not listed as following rotations.
			dir, derr := register(ctx, cfg.Agent.Socket, agent, spec, id, pid, withAPI, control.Request{})
			if !withAPI {
				return nil, "", nil
			}
			return nil, dir, derr
		}
		time.Sleep(deliverRetryPause)
		reply, err = agent.Register(ctx, id, identity, pid, req)
	}
	if !withAPI {
		return nil, "", nil
	}
	if !reachable(err) {
		return nil, "", agentError(cfg.Agent.Socket, err)
	}
	// The agent answered but could not deliver: the socket alone.
	dir, err := register(ctx, cfg.Agent.Socket, agent, spec, id, pid, true, control.Request{})
	return nil, dir, err
}

// How long deliver waits for the agent to catch a container up to the
// store's secret: rotating 1,000 containers takes about 60 ms.
const (
	deliverRetries    = 10
	deliverRetryPause = 20 * time.Millisecond
)

// current checks that id names the record the store holds now.
func current(cfg *config.Config, id control.RecordID) error {
	st, err := configured.Store(cfg)
	if err != nil {
		return err
	}
	rec, err := st.Current()
	if err != nil {
		return err
	}
	if want := control.IDOf(rec); want != id {
		return fmt.Errorf("the agent delivered generation %d, the store holds %d", id.Generation, want.Generation)
	}
	return nil
}

// attachMount moves mnt, with apiTree (nil: none) on its API directory,
// onto /run/northstar in the container.
func attachMount(mnt *mount.Mount, rootfs string, pid int, inContainer bool, apiTree *os.File) error {
	creator, err := containerRoot(pid, inContainer)
	if err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	attach := func() error {
		if err := mnt.AttachInRoot(rootfs, secretfs.Dir, creator); err != nil {
			return err
		}
		if apiTree != nil {
			return mnt.AttachAPI(apiTree)
		}
		return nil
	}
	if inContainer {
		err = attach()
	} else {
		err = attachFromRuntime(pid, attach)
	}
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	return nil
}

// buildMount unseals the secret into a sealed memfd and builds the detached
// filesystem from it. Plaintext copies live only in this function and are
// zeroed before it returns.
//
// With an agent (nil: none) it first asks the agent for the memfd
// (Agent.Current: only the current secret is taken); an absent, stale
// or refused agent silently falls back to unsealing, so the agent can never
// make a start fail.
func buildMount(ctx context.Context, st *store.Store, agent Agent, owner mount.Owner, withAPI bool) (*mount.Mount, error) {
	var memfd *os.File
	if agent != nil {
		memfd, _ = agent.Current(ctx, st)
	}
	if memfd == nil {
		sec, _, err := st.Secret(ctx)
		if err != nil {
			return nil, fmt.Errorf("unseal: %w", err)
		}
		if memfd, err = secretfs.NewSecretMemfd("northstar-secret", sec); err != nil {
			return nil, fmt.Errorf("memfd: %w", err)
		}
	}
	defer memfd.Close()
	newMount := mount.New
	if withAPI {
		newMount = mount.NewWithAPI
	}
	mnt, err := newMount(memfd, owner)
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	return mnt, nil
}

// register registers the container with the agent, asking for what req
// says and, with withAPI, for its API socket; it returns the socket's
// directory ("": none, or the container opted out of the API). An agent
// that cannot be reached fails the start, naming it.
func register(ctx context.Context, agentSocket string, agent Agent, spec *specs.Spec, id string, pid int, withAPI bool, req control.Request) (string, error) {
	identity, err := apiIdentity(spec, id)
	if err != nil {
		return "", err
	}
	req.API = withAPI && identity != ""
	if identity == "" {
		if !req.HookMounts {
			return "", nil
		}
		// Listed for live rotation only: the identity names it.
		if identity, err = delivery.IdentityFor(spec, id); err != nil {
			return "", fmt.Errorf("policy: %w", err)
		}
	}
	req.Pod = delivery.PodFor(spec)
	reply, err := agent.Register(ctx, id, identity, pid, req)
	if err != nil {
		return "", agentError(agentSocket, err)
	}
	return reply.Dir, nil
}

// reachable reports whether err came from an agent that answered.
func reachable(err error) bool {
	var ne *net.OpError
	return err != nil && !errors.As(err, &ne) && !errors.Is(err, os.ErrNotExist)
}

// agentError is the one line of a registration that failed.
func agentError(agentSocket string, err error) error {
	if !reachable(err) {
		return fmt.Errorf("api: agent at %s not reachable: %v; start 'northstarctl agent'", agentSocket, unwrapSyscall(err))
	}
	return fmt.Errorf("api: register with the agent at %s: %w", agentSocket, err)
}

// apiIdentity is the identity the container's API speaks as, "" when it
// opted out (io.northstar.api.disable); a malformed annotation is an error.
func apiIdentity(spec *specs.Spec, id string) (string, error) {
	off, err := delivery.APIDisabled(spec)
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	if off {
		return "", nil
	}
	identity, err := delivery.IdentityFor(spec, id)
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	return identity, nil
}

// registeredAPI is registerAPI for the hook inside the container
// (createContainer): it cannot register (the agent refuses other mount
// namespaces), so it opens the directory that the createRuntime stage
// registered (see splitStages). The path is resolved before pivot_root,
// in the container's copy of the runtime's mounts: so never in a mount
// namespace the container joins (another container's, whose files its
// processes control), and without following a symlink below the agent's
// directory; and the directory must be the agent's user's, which is this
// hook's user (container root, mapped to the runtime's user).
func registeredAPI(agentSocket string, spec *specs.Spec, id string) (*os.File, error) {
	// The identity is registered by the other stage; a bad annotation
	// still stops the start here.
	if identity, err := apiIdentity(spec, id); err != nil || identity == "" {
		return nil, err
	}
	if ns := joinedMountNamespace(spec); ns != "" {
		return nil, fmt.Errorf("api: the container joins the mount namespace %s, where its API directory cannot be found safely; give it a mount namespace of its own", ns)
	}
	notRegistered := fmt.Errorf("api: container %s is not registered with the agent at %s; inside the container the hook cannot register it: put the hook at createRuntime as well as createContainer ('northstarctl config runc --rootless')", id, agentSocket)
	// The registration's key names the directory: the id, the container's
	// process and its start time, as the createRuntime stage sent them.
	// Here, in the container's pid namespace, the state names the process
	// as runc's init sees itself (pid 1); the host's /proc, still mounted
	// before pivot_root, names it as the runtime did: our parent there.
	pid, err := procstat.SelfParent()
	if err != nil {
		return nil, fmt.Errorf("api: find the container's process: %w", err)
	}
	start, err := procstat.StartTime(pid)
	if err != nil {
		return nil, fmt.Errorf("api: container process %d: %w", pid, err)
	}
	// Resolved in two parts: the agent's directory as configured (it may
	// sit below a symlink such as /var/run), then strictly below it.
	agentDir, path := filepath.Dir(agentSocket), control.ContainerDir(agentSocket, control.Registration{ID: id, Pid: pid, Start: start})
	rel, err := filepath.Rel(agentDir, path)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	parent, err := os.OpenFile(agentDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, notRegistered
	}
	if err != nil {
		return nil, fmt.Errorf("api: agent directory: %w", err)
	}
	defer parent.Close()
	fd, err := unix.Openat2(int(parent.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, notRegistered
	}
	if err != nil {
		return nil, fmt.Errorf("api: open %s: %w", path, err)
	}
	dir := os.NewFile(uintptr(fd), rel)
	defer dir.Close()
	// The agent makes the directory as its own user, who owns the agent
	// directory too (which the agent checks at start).
	var st, owner unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := unix.Fstat(int(parent.Fd()), &owner); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if st.Uid != owner.Uid {
		return nil, fmt.Errorf("api: %s belongs to uid %d, not to the agent directory's owner (uid %d): not the agent's directory", rel, st.Uid, owner.Uid)
	}
	tree, err := mount.OpenAPITreeOf(dir)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return tree, nil
}

// joinedMountNamespace returns the path of the mount namespace spec joins
// instead of making its own ("" when it makes one).
func joinedMountNamespace(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.MountNamespace {
			return ns.Path
		}
	}
	return ""
}

// splitStages reports whether spec also runs northstar at createContainer.
// Then the createRuntime (or prestart) hook only registers the container
// with the agent, and the createContainer one does the rest: the way for
// plain rootless runc, where neither stage alone can do both.
func splitStages(spec *specs.Spec) bool {
	if spec.Hooks == nil {
		return false
	}
	for _, h := range spec.Hooks.CreateContainer {
		if entry.IsNorthstar(h) {
			return true
		}
	}
	return false
}

// unwrapSyscall shortens "dial unixpacket /x: connect: connection refused"
// to its errno.
func unwrapSyscall(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// attachFromRuntime runs attach inside the container's mount namespace.
func attachFromRuntime(pid int, attach func() error) error {
	same, err := nsenter.SameNamespace(pid, "mnt")
	if err != nil {
		return err
	}
	if same {
		// Attaching here would mount over the host's view of the rootfs.
		return errors.New("the container shares the runtime's mount namespace; refusing to mount on the host")
	}
	return nsenter.InMountNamespace(pid, attach)
}

// containerRoot returns the ids of the container's root user as seen by
// the hook, which creates missing directories of /run/northstar with them
// (as runc does for mountpoints); nil when they are the hook's own (no user
// namespace of its own, or the hook runs inside the container).
func containerRoot(pid int, inContainer bool) (*mount.IDs, error) {
	if inContainer {
		return nil, nil
	}
	o, err := translate(pid, 0, 0)
	if err != nil || o == nil {
		return nil, err
	}
	return &mount.IDs{UID: o[0], GID: o[1]}, nil
}

// translate maps a uid and gid of the container's user namespace to the
// hook's; nil when the container shares the hook's user namespace.
func translate(pid int, uid, gid uint32) ([]uint32, error) {
	same, err := nsenter.SameNamespace(pid, "user")
	if err != nil || same {
		return nil, err
	}
	out := []uint32{uid, gid}
	for i, which := range []string{"uid", "gid"} {
		maps, err := idmap.Read(pid, which)
		if err != nil {
			return nil, err
		}
		v, ok := idmap.ToOutside(maps, out[i])
		if !ok {
			return nil, fmt.Errorf("%s %d is not mapped in the container's user namespace; set %s to a mapped id", which, out[i], map[string]string{"uid": delivery.AnnotationUID, "gid": delivery.AnnotationGID}[which])
		}
		out[i] = v
	}
	return out, nil
}

// ownerFor translates the policy's container ids into ids of the namespace
// that builds the mount. Inside the container (createContainer) they are
// used as they are; from the runtime they go through the container's
// uid_map/gid_map when it has its own user namespace.
func ownerFor(pid int, p *delivery.Policy, inContainer bool) (mount.Owner, error) {
	o := mount.Owner{UID: p.UID, GID: p.GID, Mode: p.Mode}
	if inContainer {
		return o, nil
	}
	ids, err := translate(pid, o.UID, o.GID)
	if err != nil || ids == nil {
		return o, err
	}
	o.UID, o.GID = ids[0], ids[1]
	return o, nil
}
