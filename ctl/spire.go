// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/agent/spire"
	"github.com/northstar-oci/northstar/config"
)

// checkSPIRE checks the SPIRE issuer ([spiffe] issuer = "spire"): whether
// the SPIRE agent's admin socket answers this process as a delegate (run
// doctor as the agent's user: SPIRE attests the caller), what the agent
// last learnt of it, and, for each container, whether SPIRE answered and
// with which SPIFFE IDs.
func checkSPIRE(ctx context.Context, cfg *config.Config, add func(level, what, fix string)) {
	if cfg.SPIFFE.Issuer != config.IssuerSPIRE || cfg.SPIFFE.TrustDomain == "" {
		return
	}
	sock := cfg.SPIRE.AdminSocket
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	switch err := spire.Probe(ctx, sock); status.Code(err) {
	case codes.OK:
		add("ok", "SPIRE agent at "+sock+" answers and takes this process as an authorized delegate", "")
	case codes.PermissionDenied:
		add("FAIL", "SPIRE agent at "+sock+" answers but refuses this process as a delegate: "+status.Convert(err).Message(),
			"create an entry for the northstar agent (e.g. spire-server entry create -parentID <node> -spiffeID spiffe://"+cfg.SPIFFE.TrustDomain+"/northstar-agent -selector unix:uid:0) and list its SPIFFE ID in the SPIRE agent's authorized_delegates (docs/spiffe.md)")
	default:
		add("FAIL", "SPIRE agent's admin socket "+sock+" does not answer: "+spire.Describe(err)+"; containers' spiffe.sock answer Unavailable until it does",
			"start the SPIRE agent with admin_socket_path = \""+sock+"\", or set [spire] admin_socket")
	}
	if cfg.Agent.Socket == "" {
		return
	}
	saved, err := registry.ReadSaved(cfg.Agent.Socket)
	if err != nil {
		return
	}
	if h := saved.SPIRE; h != nil && !(h.Answers && h.Delegate) {
		add("warn", "the agent's last word from SPIRE: "+h.Why, "")
	}
	for _, e := range saved.Containers {
		if e.SPIRE == nil {
			continue
		}
		if len(e.SPIRE.SPIFFEIDs) > 0 {
			add("ok", fmt.Sprintf("container %s (%s): SPIRE issued %v", e.ID, e.Identity, e.SPIRE.SPIFFEIDs), "")
			continue
		}
		fix := fmt.Sprintf("write an entry parented to this node whose selectors are among %v (docs/spiffe.md)", e.SPIRE.Selectors)
		if !e.SPIRE.Answered {
			fix = "" // the SPIRE agent's line above says what to do
		}
		add("warn", fmt.Sprintf("container %s (%s): no SVID from SPIRE: %s", e.ID, e.Identity, e.SPIRE.Why), fix)
	}
}
