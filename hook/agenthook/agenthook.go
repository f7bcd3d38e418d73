// SPDX-License-Identifier: Apache-2.0

// Package agenthook is northstar-agent-hook, the OCI hook for hosts where
// the agent runs: it reads the runtime's state and has the agent do the
// hook's work (package hookstart: the agent runs package hook's Start in
// its own process). It links none of that work (no TPM, mount or policy
// code, no JSON), so its process costs about what any Go program that
// asks another one something costs (docs/performance.md).
//
// Where the agent does not serve the start (none listens, it was started
// with another config or the config changed since, the hook runs inside
// the container), it becomes northstar-hook (exec, the same arguments and
// state), which does the start itself as it would have without this one.
// What the agent answers once it took the request is final: its errors
// fail the start, as the hook's own would.
//
// The command runs a C fast path first (package agenthook/fastpath),
// which does what Run does for a start the agent serves before the Go
// runtime starts; Run gets what it leaves, with the state back on stdin.
// The constants below are the C's too: a change here is one there.
package agenthook

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control/hookstart"
	"github.com/northstar-oci/northstar/config/peek"
	"github.com/northstar-oci/northstar/hook/hookname"
	"github.com/northstar-oci/northstar/internal/binpath"
	"github.com/northstar-oci/northstar/internal/capped"
	"github.com/northstar-oci/northstar/internal/idmap"
)

// maxState is what the hook reads of its stdin, as northstar-hook.
const maxState = 64 << 10

// timeout bounds the agent's answer: it registers the container and
// mounts its secret; a busy disk can stall it for a few hundred
// milliseconds (control.RegisterTimeout).
const timeout = 5 * time.Second

// Run is the hook's main: args without the program name, the state on
// stdin. It returns nil when the agent served the start, the start's
// failure, or (when the agent does not serve it) only if northstar-hook
// could not be run in its place. declined, when not nil, is why the agent
// did not serve the start the C fast path already asked it for
// (fastpath.Declined): Run does not ask again.
func Run(args []string, stdin io.Reader, declined error) error {
	state, err := capped.ReadAll(stdin, maxState, "state")
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if declined != nil {
		err = fmt.Errorf("%w: %v", hookstart.ErrNotServed, declined)
	} else if err = ask(args, state); !errors.Is(err, hookstart.ErrNotServed) {
		return err
	}
	return becomeHook(args, state, err)
}

// ask has the agent serve the start.
func ask(args []string, state []byte) error {
	notServed := func(why any) error { return fmt.Errorf("%w: %v", hookstart.ErrNotServed, why) }
	fs := flag.NewFlagSet(hookname.AgentHook, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "")
	hostWide := fs.Bool(hookname.HostWideFlag[2:], false, "")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return notServed("arguments") // northstar-hook says what is wrong with them
	}
	path := peek.Discover(*configPath)
	if *hostWide {
		// The host's config for root; for a rootless user, whose
		// runtime cannot reach the host's agent anyway, northstar-hook
		// decides (package hook/hostwide).
		if uid, err := idmap.HostUID(); err != nil || uid != 0 {
			return notServed("a host-wide hook file run by a rootless user")
		}
	}
	socket, err := peek.AgentSocket(path)
	if err != nil {
		return notServed(err)
	}
	if socket == "" {
		return notServed("no [agent] socket in " + path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return notServed(err)
	}
	return hookstart.Ask(socket, hookstart.Request{Config: abs, Parent: os.Getppid(), State: state}, timeout)
}

// becomeHook execs northstar-hook (beside this binary, else on PATH) with
// args, the state on its stdin; why is why the agent did not serve.
func becomeHook(args []string, state []byte, why error) error {
	path, err := binpath.Find(hookname.Hook)
	if err != nil {
		return fmt.Errorf("%v, and %w", why, err)
	}
	fd, err := unix.MemfdCreate("northstar-state", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd for the state: %w", err)
	}
	f := os.NewFile(uintptr(fd), "northstar-state")
	if _, err := f.Write(state); err != nil {
		return fmt.Errorf("memfd for the state: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("memfd for the state: %w", err)
	}
	// The state on fd 0, which the exec keeps; the memfd's own fd closes.
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return fmt.Errorf("memfd for the state: %w", err)
	}
	return fmt.Errorf("exec %s: %w", path, unix.Exec(path, append([]string{hookname.Hook}, args...), os.Environ()))
}
