// SPDX-License-Identifier: Apache-2.0

// Package rotate starts a new secret lifecycle when the container runtime
// restarted (DESIGN.md §3): for the wrappers that containerd and Docker
// run on every container start (the shim, northstar-runtime) and for the
// agent's NRI plugin.
//
// Whether anything is to be done is a read of the store's record: is it
// this runtime's lifecycle? On every start but the first after a restart
// it is, and that answer needs no sealer. Rotating (or adopting the
// secret init made) seals, so it runs in a child, `northstarctl agent
// --rotate-lifecycle ID`: the wrappers link no TPM code, whose package
// initialisation and page faults every container start would pay
// (docs/performance.md). The store decides under its lock, so many
// wrappers starting at once after a restart rotate once.
package rotate

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/internal/binpath"
	"github.com/northstar-oci/northstar/internal/childerr"
	"github.com/northstar-oci/northstar/lifecycle"
	"github.com/northstar-oci/northstar/store"
)

// Result is what a rotation did.
type Result struct {
	Change     store.Change
	Generation uint64
}

// Func starts a new secret lifecycle for lifecycleID unless the stored
// secret already belongs to it (store.RotateIfLifecycleChanged).
type Func func(ctx context.Context, lifecycleID string) (Result, error)

// Flag is the flag of `northstarctl agent` that runs the child's side of
// InChild: rotate for its value, Report, exit.
const Flag = "--rotate-lifecycle"

// Ctl is the program that rotates in a child.
const Ctl = "northstarctl"

// InChild rotates in a child process: argv plus Flag and the lifecycle
// id, which rotates and Reports what it did on its stdout. env is added to
// this process's environment for it. The child's stdout and stderr go to
// no one else (the shim's stdout is containerd's pipe for its address):
// its failure is its one line, without its program's name.
func InChild(argv []string, env ...string) Func {
	return func(ctx context.Context, lifecycleID string) (Result, error) {
		var stdout, stderr strings.Builder
		cmd := exec.CommandContext(ctx, argv[0], append(argv[1:len(argv):len(argv)], Flag, lifecycleID)...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return Result{}, childerr.From(stderr.String(), err)
		}
		return parse(stdout.String())
	}
}

// ByCtl rotates in `northstarctl agent --config configPath`, the
// northstarctl next to this executable or else on PATH (as the shim and
// the wrapper find the hook), looked up only when a rotation is due.
func ByCtl(configPath string) Func {
	return func(ctx context.Context, lifecycleID string) (Result, error) {
		exe, err := binpath.Find(Ctl)
		if err != nil {
			return Result{}, fmt.Errorf("rotate lifecycle secret: %w; install it with northstar's other binaries (it seals the new secret)", err)
		}
		return InChild([]string{exe, "agent", "--config", configPath})(ctx, lifecycleID)
	}
}

// Report is the child's answer: what the rotation did, on one line
// ("rotated 8").
func Report(w io.Writer, rec *store.Record, change store.Change) error {
	_, err := fmt.Fprintf(w, "%s %d\n", changeNames[change], rec.Generation)
	return err
}

var changeNames = map[store.Change]string{store.Unchanged: "unchanged", store.Adopted: "adopted", store.Rotated: "rotated"}

func parse(out string) (Result, error) {
	f := strings.Fields(out)
	if len(f) == 2 {
		for c, name := range changeNames {
			if gen, err := strconv.ParseUint(f[1], 10, 64); err == nil && f[0] == name {
				return Result{Change: c, Generation: gen}, nil
			}
		}
	}
	return Result{}, fmt.Errorf("rotation child said %q", strings.TrimSpace(out))
}

// IfRuntimeRestarted starts a new secret lifecycle, with rotate, when
// runtimePid is not the runtime process the stored secret was made for
// (the shim's containerd, the Docker runtime wrapper's engine). When it
// is, the record says so and nothing runs. note is the one line to log
// when something changed, "" when nothing did.
func IfRuntimeRestarted(ctx context.Context, cfg *config.Config, runtimePid int, rotate Func) (note string, err error) {
	id, err := lifecycle.ID(runtimePid)
	if err != nil {
		return "", fmt.Errorf("lifecycle id: %w", err)
	}
	// Any other answer (no record, a bad one, another lifecycle's) is the
	// child's to act on, under the store's lock, as it did in process.
	if rec, err := store.ForReading(cfg.StateDir, cfg.Sealer).Current(); err == nil && rec.LifecycleID == id {
		return "", nil
	}
	r, err := rotate(ctx, id)
	if err != nil {
		return "", err
	}
	switch r.Change {
	case store.Rotated:
		return fmt.Sprintf("northstar: runtime restarted, new lifecycle secret generation=%d lifecycle_id=%q config=%q",
			r.Generation, id, cfg.Path), nil
	case store.Adopted:
		return fmt.Sprintf("northstar: secret generation=%d adopted for this runtime lifecycle lifecycle_id=%q config=%q",
			r.Generation, id, cfg.Path), nil
	}
	return "", nil
}
