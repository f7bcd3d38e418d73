// SPDX-License-Identifier: Apache-2.0

package agent

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/northstar-oci/northstar/store"
)

// Rotation is what a lifecycle rotation did, as RotateInChild reports it.
type Rotation struct {
	Change     store.Change
	Generation uint64
}

// LifecycleRotator starts a new secret lifecycle for lifecycleID unless
// the stored secret already belongs to it (store.RotateIfLifecycleChanged).
type LifecycleRotator func(ctx context.Context, lifecycleID string) (Rotation, error)

// RotateInChild rotates the way InChild unseals, and for the same reason:
// sealing a new secret passes its plaintext through go-tpm's buffers,
// which are garbage, not zeroed, in whoever seals; the agent lives for the
// whole lifecycle. argv plus "--rotate-lifecycle ID" must run RotateFor.
func RotateInChild(argv []string) LifecycleRotator {
	return func(ctx context.Context, lifecycleID string) (Rotation, error) {
		var stdout, stderr strings.Builder
		args := append(append([]string(nil), argv...), "--rotate-lifecycle", lifecycleID)
		cmd := childCommand(ctx, args, nil, &stderr)
		cmd.ExtraFiles = nil
		cmd.Stdout = &stdout
		if err := cmd.Run(); err != nil {
			return Rotation{}, childError(stderr.String(), err)
		}
		return parseRotation(stdout.String())
	}
}

// RotateFor is the child's side of RotateInChild: it rotates st for
// lifecycleID and writes what it did to w ("rotated 8").
func RotateFor(ctx context.Context, st *store.Store, lifecycleID string, w io.Writer) error {
	if err := harden(); err != nil { // a new secret passes through this heap, as in UnsealTo
		return err
	}
	rec, change, err := st.RotateIfLifecycleChanged(ctx, lifecycleID)
	if err != nil {
		return fmt.Errorf("rotate lifecycle secret: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s %d\n", changeNames[change], rec.Generation)
	return err
}

var changeNames = map[store.Change]string{store.Unchanged: "unchanged", store.Adopted: "adopted", store.Rotated: "rotated"}

func parseRotation(out string) (Rotation, error) {
	f := strings.Fields(out)
	if len(f) == 2 {
		for c, name := range changeNames {
			if gen, err := strconv.ParseUint(f[1], 10, 64); err == nil && f[0] == name {
				return Rotation{Change: c, Generation: gen}, nil
			}
		}
	}
	return Rotation{}, fmt.Errorf("rotation child said %q", strings.TrimSpace(out))
}
