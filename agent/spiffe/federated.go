package spiffe

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

// federated returns s's federated bundles and the channel of their next
// change (nil without federation: never ready).
func (s *Server) federated() (map[string][]byte, <-chan struct{}) {
	if s.cfg.Federated == nil {
		return nil, nil
	}
	return s.cfg.Federated.FederatedBundles()
}
