// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"maps"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Federated is the X.509 bundles of other trust domains this host's
// containers trust (package agent/federation: attested northstar peers),
// which the local issuer sends as federated_bundles in every
// X509SVIDResponse and beside the trust domain's own in FetchX509Bundles.
type Federated interface {
	// FederatedBundles returns each trust domain's bundle (its ID, as
	// "spiffe://example.org", to the concatenated DER of its authorities)
	// and a channel closed at the next change, in one call, so that a
	// change between the two is never missed.
	FederatedBundles() (bundles map[string][]byte, changed <-chan struct{})
}

// federatedOf returns f's bundles, never one for td, and the channel of
// their next change (nil without f: never ready).
func federatedOf(f Federated, td spiffeid.TrustDomain) (map[string][]byte, <-chan struct{}) {
	if f == nil {
		return nil, nil
	}
	m, changed := f.FederatedBundles()
	if _, ok := m[td.IDString()]; ok {
		m = maps.Clone(m)
		delete(m, td.IDString())
	}
	return m, changed
}

// federatedChanged is the channel closed at the next change of the
// server's federated bundles (nil without: never ready).
func (s *Server) federatedChanged() <-chan struct{} {
	if s.cfg.Federated == nil {
		return nil
	}
	_, changed := s.cfg.Federated.FederatedBundles()
	return changed
}
