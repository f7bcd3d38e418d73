package spiffe

import "maps"

// Federated is the X.509 bundles of other trust domains this host's
// containers trust (package agent/federation: attested northstar peers),
// sent as federated_bundles in every X509SVIDResponse and beside the
// trust domain's own in FetchX509Bundles.
type Federated interface {
	// FederatedBundles returns each trust domain's bundle (its name, as
	// "spiffe://example.org", to the concatenated DER of its authorities)
	// and a channel closed at the next change, in one call, so that a
	// change between the two is never missed.
	FederatedBundles() (bundles map[string][]byte, changed <-chan struct{})
}

// federated returns s's federated bundles, never one for its own trust
// domain, and the channel of their next change (nil without federation:
// never ready).
func (s *Server) federated() (map[string][]byte, <-chan struct{}) {
	if s.cfg.Federated == nil {
		return nil, nil
	}
	m, changed := s.cfg.Federated.FederatedBundles()
	own := s.cfg.CA.TrustDomain().IDString()
	if _, ok := m[own]; ok {
		m = maps.Clone(m)
		delete(m, own)
	}
	return m, changed
}
