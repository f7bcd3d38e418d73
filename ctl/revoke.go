// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/northstar-oci/northstar/agent/control"
)

// runRevoke is `northstarctl revoke`: the revocations as a noun, as
// `docker network`/`ctr` have theirs: list them, revoke (what rotate
// --revoke does), and lift one. A revoked id stays revoked, and a
// container with it cannot start, until it is lifted; a lift is a
// rotation, like a revocation, so that the agent sees it and audits it.
func runRevoke(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "revoke", "[--config PATH] [--lift] [--list] [ID...]")
	lift := fs.Bool("lift", false, "lift the revocations of these container ids: containers with them may start again (a rotation, audited by the agent)")
	list := fs.Bool("list", false, "list the revoked container ids and the generation that revoked each")
	ids, err := parse(fs, env, args, 1<<10)
	if err != nil {
		return helpOK(err)
	}
	switch {
	case *list && (*lift || len(ids) > 0):
		return fmt.Errorf("%w: --list takes no ids", ErrUsage)
	case !*list && len(ids) == 0:
		return fmt.Errorf("%w: name the container ids (or --list)", ErrUsage)
	}
	for _, id := range ids {
		if err := (control.Registration{ID: id, Identity: "x", Pid: 2, Start: 1}).Check(); err != nil {
			return fmt.Errorf("%w: %q: not a container id", ErrUsage, id)
		}
	}
	_, st, err := openStore(*cfgPath)
	if err != nil {
		return err
	}
	if *list {
		rec, err := st.Current()
		if err != nil {
			return err
		}
		for _, r := range rec.Revoked {
			fmt.Fprintf(env.Stdout, "%s\trevoked at generation %d\n", r.ID, r.Generation)
		}
		return nil
	}
	if !*lift {
		rec, err := st.Rotate(ctx, ids...)
		if err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
		fmt.Fprintf(env.Stdout, "rotated %s: generation %d\nrevoked: %s (the agent cuts them off as it delivers generation %d; 'northstarctl revoke --lift ID' lets the id start again)\n",
			st.Dir(), rec.Generation, strings.Join(ids, ", "), rec.Generation)
		return nil
	}
	rec, err := st.Lift(ctx, ids...)
	if err != nil {
		return fmt.Errorf("lift: %w", err)
	}
	fmt.Fprintf(env.Stdout, "rotated %s: generation %d\nlifted: %s (containers with these ids may start again)\n", st.Dir(), rec.Generation, strings.Join(ids, ", "))
	return nil
}
