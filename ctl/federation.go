// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/federation"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/config"
)

// federate sets up the agent's [federation] (docs/attestation.md): with
// peers, their bundles checked until ctx ends and handed to every
// container; with enable, this host's bundle endpoint and evidence, served
// once the CA is under its TPM root.
func federate(ctx context.Context, cfg *config.Config, sp *registry.SPIFFE, log io.Writer) error {
	f := cfg.Federation
	if len(f.Peers) > 0 {
		peers, err := federationPeers(cfg)
		if err != nil {
			return err
		}
		set := federation.NewSet(filepath.Join(cfg.StateDir, federation.StatusFile))
		federation.Watch(ctx, set, federation.Options{Peers: peers, Timeout: cfg.FederationTimeout(), MaxRefresh: cfg.RefreshHint(), Log: log})
		sp.Federated = set
	}
	if !f.Enable {
		return nil
	}
	a, err := attester(cfg)
	if err != nil {
		return err
	}
	root := sp.Root
	if root == nil {
		return fmt.Errorf("[federation] enable = true needs [spiffe] root = %q", config.SPIFFERootTPM)
	}
	sp.Root = func(rctx context.Context, ca *spiffe.CA) error {
		if err := root(rctx, ca); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.FederationListen())
		if err != nil {
			return fmt.Errorf("[federation] listen: %w", err)
		}
		go func() {
			err := federation.Serve(ctx, ln, federation.EndpointOptions{CA: ca, Attester: a,
				RefreshHint: cfg.RefreshHint(), Timeout: cfg.FederationTimeout(), Log: log})
			if err != nil {
				fmt.Fprintf(log, "northstar agent: federation: the bundle endpoint stopped: %v\n", err)
			}
		}()
		return nil
	}
	return nil
}

// federationPeers reads the [[federation.peer]] entries' files.
func federationPeers(cfg *config.Config) ([]federation.Peer, error) {
	var peers []federation.Peer
	for _, p := range cfg.Federation.Peers {
		td, err := spiffeid.TrustDomainFromString(p.TrustDomain) // validated by config
		if err != nil {
			return nil, err
		}
		roots, inter, err := readCAs(p.EKCA)
		if err != nil {
			return nil, fmt.Errorf("[[federation.peer]] %s: ek_ca %s: %w", p.TrustDomain, p.EKCA, err)
		}
		ek, err := readEK(p.EK)
		if err != nil {
			return nil, fmt.Errorf("[[federation.peer]] %s: ek %s: %w", p.TrustDomain, p.EK, err)
		}
		pcrs, err := config.ParsePCRs(p.PCRs) // validated by config
		if err != nil {
			return nil, err
		}
		peers = append(peers, federation.Peer{TrustDomain: td, BundleURL: p.BundleURL, EvidenceURL: p.EvidenceURLOrDefault(),
			EKRoots: roots, EKIntermediates: inter, EK: ek, PCRs: pcrs})
	}
	return peers, nil
}

// printPeers prints `northstarctl status`'s federation lines: one a peer.
func printPeers(env *Env, conf []config.FederationPeer, peers []federation.PeerStatus) {
	if len(conf) == 0 {
		return
	}
	if len(peers) == 0 {
		fmt.Fprintf(env.Stdout, "federation:   %d peers, not checked yet (is the agent running?)\n", len(conf))
		return
	}
	fmt.Fprintf(env.Stdout, "federation:   %d peers\n", len(peers))
	for _, p := range peers {
		state := "trusted, attested " + p.Checked.Format(time.RFC3339)
		if !p.Trusted {
			state = "refused since " + p.Since.Format(time.RFC3339) + ": " + p.Reason
		}
		fmt.Fprintf(env.Stdout, "  %-24s %s\n", p.TrustDomain, state)
	}
}
