// Package shim is the containerd runtime v2 shim of northstar,
// containerd-shim-northstar-v2 (runtime type io.containerd.northstar.v2).
//
// It is runc's shim (containerd v1.7's runtime/v2/runc manager and task
// service; a v1.7-based shim works under containerd 1.6, 1.7 and 2.x) with
// two additions:
//
//   - `start` (run by containerd for every new container, with containerd as
//     its parent) rotates the lifecycle secret when containerd is not the
//     process the stored secret was made for: a restarted containerd starts
//     a new secret lifecycle (see lifecycleID).
//   - Create adds the northstar createRuntime hook to the bundle's
//     config.json before runc sees it (see injectHook).
//
// Both fail closed: the container is not created, and containerd shows a
// one-line "northstar shim: ..." cause. The shim never touches the secret
// itself; the hook does.
package shim

import (
	"context"
	"errors"
	"strings"

	"github.com/northstar-oci/northstar/remedy"

	runcmanager "github.com/containerd/containerd/runtime/v2/runc/manager"
	v2shim "github.com/containerd/containerd/runtime/v2/shim"
)

// RuntimeName is the containerd runtime type; containerd maps it to the
// binary containerd-shim-northstar-v2 on its PATH.
const RuntimeName = "io.containerd.northstar.v2"

// Run runs the shim for the action containerd asked for (start, delete, or
// serving the task API). Like every containerd shim it does not return on
// failure: containerd's shim.RunManager prints the error for containerd
// and exits 1.
func Run(ctx context.Context) {
	registerTaskPlugin()
	v2shim.RunManager(ctx, manager{Manager: runcmanager.NewShimManager(RuntimeName)})
}

// shimError makes err the one line containerd passes on to its client:
// prefixed, no newlines (ctr prints it as is).
func shimError(err error) error {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(remedy.Explain(err).Error(), "\n", "; ")), " ")
	return errors.New("northstar shim: " + msg)
}
