package ctl

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/northstar-oci/northstar/secretfs/seal"
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
	if err := parse(fs, env, args); err != nil {
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
	if rec.Sealer == "tpm" {
		s.TPMPath = cfg.TPM.Path
		// What the blob is bound to, read from the blob itself: it may
		// differ from the config until the next rotation.
		b, err := seal.DecodeTPMBlob(rec.Blob)
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		s.PCRs, s.SRKName = b.PCRs, hex.EncodeToString(b.SRKName)
		s.Protection = "TPM 2.0 sealed (FixedTPM|FixedParent), PCRs " + joinInts(b.PCRs)
	} else {
		s.Protection = "host key file only: a copy of the state directory reveals the secret (no TPM protection)"
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(env.Stdout, "config:       %s\nstate dir:    %s\nsealer:       %s\n", s.Config, s.StateDir, s.Sealer)
	if s.TPMPath != "" {
		fmt.Fprintf(env.Stdout, "tpm path:     %s\npcrs:         %s\nsrk name:     %s\n", s.TPMPath, joinInts(s.PCRs), s.SRKName)
	}
	fmt.Fprintf(env.Stdout, "generation:   %d\nlifecycle id: %s\ncreated:      %s\nprotection:   %s\n",
		s.Generation, s.LifecycleID, s.Created.Format(time.RFC3339), s.Protection)
	return nil
}
