// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testCert makes a CA certificate of a new key, signed by parent (self
// when nil), valid from notBefore for ttl.
func testCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, notBefore time.Time, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: notBefore, NotAfter: notBefore.Add(ttl), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// TestExternalRoot: under an external root the CA issues nothing until it
// has an intermediate the root signed; SVIDs then carry that intermediate,
// never outlive it, and none is issued once it expired.
func TestExternalRoot(t *testing.T) {
	ca := newCA(t, 1)
	root, rootKey := testCert(t, nil, nil, t0.Add(-time.Hour), 1000*time.Hour)
	if err := ca.UseRoot(root); err != nil {
		t.Fatal(err)
	}
	if !ca.Certificate().Equal(root) {
		t.Fatal("the bundle is not the root")
	}
	if _, err := ca.IssueX509(brokerI, t0, time.Hour); !errors.Is(err, ErrNoIntermediate) {
		t.Fatalf("issued before an intermediate: %v", err)
	}

	stranger, strangerKey := testCert(t, nil, nil, t0.Add(-time.Hour), 1000*time.Hour)
	notRoots, _ := testCert(t, stranger, strangerKey, t0, 2*time.Hour)
	if err := ca.SetIntermediate(Intermediate{Cert: notRoots, Key: strangerKey}, t0); err == nil || !strings.Contains(err.Error(), "not a CA certificate signed by the root") {
		t.Errorf("an intermediate of another root: %v", err)
	}
	in, inKey := testCert(t, root, rootKey, t0, 90*time.Minute)
	if err := ca.SetIntermediate(Intermediate{Cert: in, Key: inKey}, t0.Add(2*time.Hour)); err == nil {
		t.Error("an expired intermediate was taken")
	}
	if err := ca.SetIntermediate(Intermediate{Cert: in, Key: inKey}, t0); err != nil {
		t.Fatal(err)
	}

	svid, err := ca.IssueX509(brokerI, t0.Add(time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := x509.ParseCertificates(svid.Cert)
	if err != nil || len(certs) != 2 || !certs[1].Equal(in) {
		t.Fatalf("the SVID's chain: %d certificates, %v", len(certs), err)
	}
	if !svid.NotAfter.Equal(in.NotAfter) || svid.Lifetime != 30*time.Minute {
		t.Errorf("SVID until %s (%s), its intermediate until %s", svid.NotAfter, svid.Lifetime, in.NotAfter)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inter.AddCert(in)
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: t0.Add(time.Hour),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("the SVID does not chain to the root: %v", err)
	}
	if _, err := ca.IssueX509(brokerI, t0.Add(2*time.Hour), time.Hour); err == nil || !strings.Contains(err.Error(), "the intermediate expired") {
		t.Errorf("issued under an expired intermediate: %v", err)
	}

	// The seed's CA, without UseRoot, knows no intermediates.
	if err := newCA(t, 2).SetIntermediate(Intermediate{Cert: in, Key: inKey}, t0); err == nil {
		t.Error("an intermediate set on a CA without an external root")
	}
}
