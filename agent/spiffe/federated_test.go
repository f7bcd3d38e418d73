// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"bytes"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
)

// bundles is a Federated the test changes.
type bundles struct {
	mu      sync.Mutex
	m       map[string][]byte
	changed chan struct{}
}

func (b *bundles) FederatedBundles() (map[string][]byte, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m, b.changed
}

func (b *bundles) set(m map[string][]byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m = m
	close(b.changed)
	b.changed = make(chan struct{})
}

// TestFederatedBundles: the peers' bundles reach a container as
// federated_bundles in every X509SVIDResponse and beside the trust
// domain's own in FetchX509Bundles, and a change (a peer dropped) is
// pushed on both streams at once; a federated entry cannot replace the
// trust domain's own bundle.
func TestFederatedBundles(t *testing.T) {
	peer := newCA(t, 2).Certificate().Raw
	fed := &bundles{m: map[string][]byte{"spiffe://peer.test": peer, "spiffe://example.org": []byte("not ours")}, changed: make(chan struct{})}
	ca := newCA(t, 1)
	ts := serve(t, ca, "client", func(c *Config) { c.Federated = fed })
	ctx := header(timeout(t))
	svids, err := ts.client(t).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := ts.client(t).FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := svids.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.FederatedBundles) != 1 || !bytes.Equal(m.FederatedBundles["spiffe://peer.test"], peer) {
		t.Errorf("federated_bundles = %d entries, want the peer's", len(m.FederatedBundles))
	}
	b, err := bs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Bundles) != 2 || !bytes.Equal(b.Bundles["spiffe://peer.test"], peer) || !bytes.Equal(b.Bundles["spiffe://example.org"], ca.Certificate().Raw) {
		t.Errorf("FetchX509Bundles = %d bundles, want ours and the peer's", len(b.Bundles))
	}

	fed.set(map[string][]byte{})
	if m, err = svids.Recv(); err != nil || len(m.FederatedBundles) != 0 || len(m.Svids) != 1 {
		t.Errorf("after the peer was dropped: %v, %d federated bundles", err, len(m.GetFederatedBundles()))
	}
	if b, err = bs.Recv(); err != nil || len(b.Bundles) != 1 {
		t.Errorf("FetchX509Bundles after the peer was dropped: %v, %d bundles", err, len(b.GetBundles()))
	}
}
