// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/northstar-oci/northstar/agent/federation"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/agent/spire"
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
	// Containers are those the agent registered ([agent] socket), with
	// the generation each holds; nil without an agent.
	Containers []Container `json:"containers,omitempty"`
	// Agent says why the containers are not listed ("" when they are).
	Agent string `json:"agent,omitempty"`
	// Peers are the [[federation.peer]] hosts as the agent last checked them.
	Peers []federation.PeerStatus `json:"federation_peers,omitempty"`
	// SPIRE is what the agent last learnt of the host's SPIRE agent
	// ([spiffe] issuer = "spire").
	SPIRE *spire.HostStatus `json:"spire,omitempty"`
	// Measured is the measured-container log ([measure] enable).
	Measured *MeasureStatus `json:"measured,omitempty"`
}

// Container is one running container the agent knows.
type Container struct {
	ID         string `json:"id"`
	Identity   string `json:"identity"`
	Pid        int    `json:"pid"`
	Generation uint64 `json:"generation,omitempty"` // the secret it holds, when the agent delivered it
	API        bool   `json:"api"`
	Follows    bool   `json:"follows"`       // rotations reach it
	Why        string `json:"why,omitempty"` // why they do not
	Revoked    bool   `json:"revoked,omitempty"`
	// SPIRE says whether SPIRE answered for the container and which
	// SPIFFE IDs it issued, or why none.
	SPIRE *spire.Status `json:"spire,omitempty"`
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
	if cfg.Agent.Socket != "" {
		saved, err := registry.ReadSaved(cfg.Agent.Socket)
		switch {
		case errors.Is(err, os.ErrNotExist):
			s.Agent = "no agent has registered containers at " + cfg.Agent.Socket
		case err != nil:
			s.Agent = "cannot read the agent's registrations: " + err.Error()
		default:
			s.Containers = []Container{}
			for _, e := range saved.Containers {
				s.Containers = append(s.Containers, Container{ID: e.ID, Identity: e.Identity, Pid: e.Pid, Generation: e.Generation,
					API: e.API, Follows: e.Follows, Why: e.Why, Revoked: e.Revoked, SPIRE: e.SPIRE})
			}
			s.SPIRE = saved.SPIRE
			sort.Slice(s.Containers, func(i, j int) bool { return s.Containers[i].ID < s.Containers[j].ID })
		}
	}
	if len(cfg.Federation.Peers) > 0 {
		s.Peers, _ = federation.ReadStatus(cfg.StateDir) // none until the agent checked them
	}
	if cfg.Measure.Enable {
		s.Measured = measureStatus(cfg)
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
	if s.Agent != "" {
		fmt.Fprintf(env.Stdout, "containers:   %s\n", s.Agent)
	} else if s.Containers != nil {
		fmt.Fprintf(env.Stdout, "containers:   %d running, registered with the agent\n", len(s.Containers))
		for _, c := range s.Containers {
			state := "follows rotations"
			switch {
			case c.Revoked:
				state = "revoked"
			case !c.Follows && c.Why != "":
				state = "cannot follow: " + c.Why
			case !c.Follows:
				state = "no shared secret"
			}
			gen := "-"
			if c.Generation != 0 {
				gen = fmt.Sprint(c.Generation)
			}
			fmt.Fprintf(env.Stdout, "  %-20s %-24s generation %-4s %s\n", c.ID, c.Identity, gen, state)
			if c.SPIRE != nil {
				fmt.Fprintf(env.Stdout, "  %-20s spire: %s\n", "", describeSPIRE(c.SPIRE))
			}
		}
	}
	if h := s.SPIRE; h != nil {
		fmt.Fprintf(env.Stdout, "spire:        %s\n", describeHost(h))
	}
	printPeers(env, cfg.Federation.Peers, s.Peers)
	if m := s.Measured; m != nil {
		if m.Error != "" {
			fmt.Fprintf(env.Stdout, "measured:     %s\n", m.Error)
		} else {
			fmt.Fprintf(env.Stdout, "measured:     %d containers in %d batches, %d not in a batch yet (log %s, NV index %#x)\n",
				m.Containers, m.Batches, m.Pending, m.Log, m.Index)
		}
	}
	return nil
}

// describeSPIRE is one container's SPIRE line of status.
func describeSPIRE(st *spire.Status) string {
	switch {
	case len(st.SPIFFEIDs) > 0 && st.Answered:
		return "answered: " + strings.Join(st.SPIFFEIDs, " ")
	case len(st.SPIFFEIDs) > 0:
		return "serving " + strings.Join(st.SPIFFEIDs, " ") + " until it expires; " + st.Why
	case st.Answered:
		return "answered, no SVID: " + st.Why + " (" + strings.Join(st.Selectors, " ") + ")"
	default:
		return "no SVID: " + st.Why
	}
}

// describeHost is the host's SPIRE line of status.
func describeHost(h *spire.HostStatus) string {
	if h.Answers && h.Delegate {
		return "the SPIRE agent at " + h.AdminSocket + " answers; this agent is an authorized delegate"
	}
	return h.Why
}
