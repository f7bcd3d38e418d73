// SPDX-License-Identifier: Apache-2.0

package agent

import (
	"context"
	"fmt"
	"io"

	"github.com/northstar-oci/northstar/lifecycle/rotate"
	"github.com/northstar-oci/northstar/store"
)

// RotateFor is the child's side of rotate.InChild (northstarctl agent
// --rotate-lifecycle, run by the agent's NRI plugin and by the runtime
// wrappers, which link no sealer): it rotates st for lifecycleID and
// reports what it did to w. It seals in a child for the reason InChild
// unseals in one: a new secret passes through go-tpm's buffers, garbage,
// not zeroed, in whoever seals, and the agent lives for the whole
// lifecycle.
func RotateFor(ctx context.Context, st *store.Store, lifecycleID string, w io.Writer) error {
	if err := harden(); err != nil { // a new secret passes through this heap, as in UnsealTo
		return err
	}
	rec, change, err := st.RotateIfLifecycleChanged(ctx, lifecycleID)
	if err != nil {
		return fmt.Errorf("rotate lifecycle secret: %w", err)
	}
	return rotate.Report(w, rec, change)
}
