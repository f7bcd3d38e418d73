package ctl

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/northstar-oci/northstar/seal"
)

// Status is what `northstarctl status` reports. It never holds the secret.
type Status struct {
	Config      string    `json:"config"`
	StateDir    string    `json:"state_dir"`
	Sealer      string    `json:"sealer"`
	TPMPath     string    `json:"tpm_path,omitempty"`
	PCRs        []int     `json:"pcrs"`
	SRKName     string    `json:"srk_name,omitempty"`
	Generation  uint64    `json:"generation"`
	LifecycleID string    `json:"lifecycle_id"`
	Created     time.Time `json:"created"`
	Protection  string    `json:"protection"`
}

func runStatus(_ context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "status", "[--config PATH] [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, env, args, 0); err != nil {
		return helpOK(err)
	}
	cfg, st, err := openStore(*cfgPath)
	if err != nil {
		return err
	}
	rec, err := st.Current()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	s := Status{
		Config: cfg.Path, StateDir: cfg.StateDir, Sealer: rec.Sealer,
		PCRs: cfg.TPM.PCRs, Generation: rec.Generation, LifecycleID: rec.LifecycleID, Created: rec.Created,
	}
	// What the blob is bound to, read from the blob itself: it may differ
	// from the config until the next rotation.
	d, err := seal.Describe(rec.Blob)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	s.Protection = d.Protection
	if d.Kind == seal.KindTPM {
		s.TPMPath, s.PCRs, s.SRKName = cfg.TPM.Path, d.PCRs, hex.EncodeToString(d.SRKName)
	}
	if *asJSON {
		return writeJSON(env.Stdout, s)
	}
	fmt.Fprintf(env.Stdout, "config:       %s\nstate dir:    %s\nsealer:       %s\n", s.Config, s.StateDir, s.Sealer)
	if s.TPMPath != "" {
		fmt.Fprintf(env.Stdout, "tpm path:     %s\npcrs:         %s\nsrk name:     %s\n", s.TPMPath, seal.FormatPCRs(s.PCRs), s.SRKName)
	}
	fmt.Fprintf(env.Stdout, "generation:   %d\nlifecycle id: %s\ncreated:      %s\nprotection:   %s\n",
		s.Generation, s.LifecycleID, s.Created.Format(time.RFC3339), s.Protection)
	return nil
}
