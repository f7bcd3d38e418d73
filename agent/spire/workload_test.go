// SPDX-License-Identifier: Apache-2.0

package spire

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/northstar-oci/northstar/agent/control"
)

func TestSelectors(t *testing.T) {
	got := selectorStrings(Selectors("client", nil))
	if want := []string{"northstar:identity:client"}; !slices.Equal(got, want) {
		t.Errorf("plain container: %v, want %v", got, want)
	}
	pod := &control.Pod{Namespace: "default", Name: "web-0", UID: "7f0c", Container: "nginx"}
	got = selectorStrings(Selectors("default/web-0/nginx", pod))
	want := []string{"northstar:identity:default/web-0/nginx", "k8s:ns:default", "k8s:pod-name:web-0", "k8s:container-name:nginx", "k8s:pod-uid:7f0c"}
	if !slices.Equal(got, want) {
		t.Errorf("CRI container: %v, want %v", got, want)
	}
}

// leaf is a self-signed certificate of id, as the first of a chain.
func leaf(t *testing.T, id string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestDecode: SVIDs of the trust domain are taken, others are not; every
// key in SPIRE's message is zeroed once copied; no SVID says why.
func TestDecode(t *testing.T) {
	c := &Client{td: spiffeid.RequireTrustDomainFromString("fleet.test")}
	keyA, keyB := []byte("key-a-pkcs8"), []byte("key-b-pkcs8")
	resp := &delegatedidentityv1.SubscribeToX509SVIDsResponse{X509Svids: []*delegatedidentityv1.X509SVIDWithKey{
		{X509Svid: &types.X509SVID{Id: &types.SPIFFEID{TrustDomain: "fleet.test", Path: "/client"}, CertChain: [][]byte{leaf(t, "spiffe://fleet.test/client")}, Hint: "internal"}, X509SvidKey: keyA},
		{X509Svid: &types.X509SVID{Id: &types.SPIFFEID{TrustDomain: "other.test", Path: "/client"}, CertChain: [][]byte{leaf(t, "spiffe://other.test/client")}}, X509SvidKey: keyB},
	}}
	svids, st := c.decode(resp)
	if len(svids) != 1 || svids[0].id.String() != "spiffe://fleet.test/client" || string(svids[0].key) != "key-a-pkcs8" || svids[0].hint != "internal" {
		t.Fatalf("decoded %+v", svids)
	}
	if !st.Answered || !slices.Equal(st.SPIFFEIDs, []string{"spiffe://fleet.test/client"}) || st.Why != "" {
		t.Errorf("status %+v", st)
	}
	for _, k := range [][]byte{keyA, keyB} {
		if strings.Trim(string(k), "\x00") != "" {
			t.Errorf("key left in SPIRE's message: %q", k)
		}
	}

	_, st = c.decode(&delegatedidentityv1.SubscribeToX509SVIDsResponse{})
	if !st.Answered || len(st.SPIFFEIDs) != 0 || !strings.Contains(st.Why, "no SPIRE entry") {
		t.Errorf("no SVID: %+v", st)
	}
	_, st = c.decode(&delegatedidentityv1.SubscribeToX509SVIDsResponse{X509Svids: resp.X509Svids[1:]})
	if !strings.Contains(st.Why, "not in trust domain fleet.test") {
		t.Errorf("only another trust domain's SVID: %+v", st)
	}
}
