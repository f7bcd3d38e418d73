// SPDX-License-Identifier: Apache-2.0

// Package runcwrap is northstar-runtime: a runc-compatible runtime for the
// engines that run runtime binaries rather than containerd shims (Docker
// 20.10's daemon.json "runtimes", CRI-O's runtime_path, `podman
// --runtime`), after NVIDIA's nvidia-container-runtime.
//
// The engine runs it as it would run runc. For `create` and `run` the
// wrapper
//
//   - starts a new secret lifecycle when the engine's containerd is not the
//     process the stored secret was made for (see findEngine), exactly
//     once however many containers start at the same moment, as the shim
//     does: the record says whether, northstarctl rotates (package
//     lifecycle/rotate);
//   - where Docker's containerd runs runc through the runc shim and the
//     agent serves, has the agent prepare the container and adds its
//     bind mounts to the bundle's config.json, with no hook (package
//     agentmounts, the shim's own code); else adds the northstar
//     createRuntime hook (entry.Rewrite), except for a Kubernetes pod
//     sandbox;
//
// and then, for every command, execs the real runtime ([runtime] delegate,
// runc by default) with the same arguments, environment, stdio and working
// directory: no process stays between the engine and runc.
//
// It prints nothing on success: engines parse runc's output. Both steps
// fail closed: the runtime is not run, and the wrapper prints one line,
// "northstar-runtime: <what failed>: <why>", on stderr and, like runc, into
// the --log file the engine reads runc's errors from.
package runcwrap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/agentmounts"
	"github.com/northstar-oci/northstar/internal/binpath"
	"github.com/northstar-oci/northstar/lifecycle/rotate"
	"github.com/northstar-oci/northstar/remedy"
)

// Name is the wrapper's binary name, the prefix of its errors.
const Name = "northstar-runtime"

// Run is the wrapper's main: args without the program name, as the engine
// passed them. It returns only on failure: on success the process has
// become the delegate runtime.
func Run(ctx context.Context, args []string) error {
	inv, err := parseArgs(args)
	if err != nil {
		return fail(inv, err)
	}
	cfg, cfgErr := loadConfig()
	if inv.prepares() && cfgErr != nil {
		return fail(inv, cfgErr)
	}
	// Every other command (state, kill, delete, ...) needs only the
	// delegate, and must work even when the config is gone: engines clean
	// up with them.
	delegate, err := findDelegate(cfg)
	if err != nil {
		return fail(inv, err)
	}
	if inv.prepares() {
		if err := prepare(ctx, cfg, delegate, inv); err != nil {
			return fail(inv, err)
		}
	}
	return fail(inv, execDelegate(delegate, args))
}

// prepare readies a new container's bundle before the runtime reads it: a
// new secret lifecycle if the engine's containerd restarted, and in
// config.json the agent's mounts or else the hook. A failed rotation fails the start: no container of this
// lifecycle runs with the previous lifecycle's secret.
func prepare(ctx context.Context, cfg *config.Config, delegate string, inv invocation) error {
	bundle, err := inv.bundleDir()
	if err != nil {
		return err
	}
	if cfg.Rotation.On != config.RotateManual {
		e, err := findEngine(os.Getppid())
		if err != nil {
			return fmt.Errorf("lifecycle: %w", err)
		}
		if e.pid != 0 {
			if err := rotateIfEngineRestarted(ctx, cfg, e, inv); err != nil {
				return err
			}
		}
	}
	return agentmounts.IntoBundle(ctx, cfg, bundle, inv.id, initPidInBundle(inv, delegate, bundle), inv.logInfo)
}

// initPidInBundle reports whether runc is created as the runc shim
// creates it (Docker, through containerd), writing the init pid to the
// bundle, where the agent waits for it: then the container gets the
// agent's mounts and no hook (package agentmounts). Other engines'
// runtimes (podman's conmon, CRI-O's) write the pid elsewhere, and keep
// the hook.
func initPidInBundle(inv invocation, delegate, bundle string) bool {
	return inv.command == "create" && filepath.Base(delegate) == "runc" &&
		inv.pidFile == filepath.Join(filepath.Clean(bundle), control.InitPidFile)
}

// rotateIfEngineRestarted starts a new secret lifecycle when e is not the
// process the stored secret was made for. The record says so without the
// sealer; the rotation runs in northstarctl, so the wrapper, run for every
// runtime call, links no TPM code. Many wrappers starting at once rotate
// exactly once: the store decides under its lock.
func rotateIfEngineRestarted(ctx context.Context, cfg *config.Config, e engine, inv invocation) error {
	note, err := rotate.IfRuntimeRestarted(ctx, cfg, e.pid, rotate.ByCtl(cfg.Path))
	if note != "" {
		inv.logInfo(note)
	}
	if err != nil {
		return fmt.Errorf("the %s: %w", e.how, err)
	}
	return nil
}

// loadConfig loads the config the wrapper and its hook use: NORTHSTAR_CONFIG
// from the engine's environment (dockerd's reaches the runtime through
// containerd and the shim; podman passes its containers.conf
// conmon_env_vars), else the rootful or rootless default. It must be
// absolute: the hook runs with the bundle as its working directory.
func loadConfig() (*config.Config, error) {
	path := config.Discover("")
	if !filepath.IsAbs(path) {
		return nil, errors.New(config.EnvConfig + "=" + path + " is not an absolute path")
	}
	path = filepath.Clean(path)
	cfg, err := config.Load(path)
	if err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist: create it, or set %s in the engine's environment", path, config.EnvConfig)
		}
		return nil, err
	}
	return cfg, nil
}

// defaultPath is searched for the delegate when the engine gives the
// wrapper no PATH, as execvp(3) and shells do: podman runs `delete` and
// `kill` with an environment of one variable, and runc, run by name that
// way, would have been found in /usr/sbin.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// searchPath is PATH, or defaultPath when PATH is unset or empty.
func searchPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return defaultPath
}

// findDelegate resolves the runtime the wrapper hands over to ([runtime]
// delegate, runc when the config cannot be read): an absolute path as it
// is, a name on PATH (see searchPath). The wrapper must never exec itself.
func findDelegate(cfg *config.Config) (string, error) {
	name := config.DefaultRuntimeDelegate
	if cfg != nil {
		name = cfg.Runtime.Delegate
	}
	path := name
	if !filepath.IsAbs(name) {
		for _, dir := range filepath.SplitList(searchPath()) {
			if p := filepath.Join(dir, name); filepath.IsAbs(p) && isExecutable(p) {
				path = p
				break
			}
		}
		if !filepath.IsAbs(path) {
			return "", fmt.Errorf("[runtime] delegate %s is not on PATH; install it (Debian: runc) or set [runtime] delegate", name)
		}
	} else if !isExecutable(path) {
		return "", fmt.Errorf("[runtime] delegate %s is not an executable file", path)
	}
	self, err1 := os.Stat("/proc/self/exe")
	fi, err2 := os.Stat(path)
	if err1 == nil && err2 == nil && os.SameFile(self, fi) {
		return "", fmt.Errorf("[runtime] delegate %s is this wrapper itself; name the real runtime (runc, crun)", path)
	}
	return path, nil
}

// execDelegate replaces this process with the delegate: the same
// arguments (argv[0] is the delegate's path), environment, stdio and
// working directory, so the runtime answers the engine exactly as if the
// engine had run it. It returns only if exec fails.
func execDelegate(path string, args []string) error {
	argv := append([]string{path}, args...)
	if err := unix.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

// fail makes err the wrapper's one line (prefixed, with its remedy, no
// newlines), and writes it into the runtime log the engine reads. nil
// stays nil.
func fail(inv invocation, err error) error {
	if err == nil {
		return nil
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(remedy.Explain(err).Error(), "\n", "; ")), " ")
	line := Name + ": " + msg
	inv.logError(line)
	return errors.New(line)
}

// isExecutable reports whether p (followed, as exec does) is an executable
// regular file.
func isExecutable(p string) bool {
	_, ok := binpath.Executable(p)
	return ok
}
