// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	brokerI = spiffeid.RequireFromPath(td, "/default/mqtt-0/broker")
	t0      = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
)

// seeded returns a fill of the seed b repeated.
func seeded(b byte) func([]byte) error {
	return func(dst []byte) error {
		for i := range dst {
			dst[i] = b
		}
		return nil
	}
}

func newCA(t testing.TB, b byte) *CA {
	t.Helper()
	ca, err := LoadCA(td, seeded(b))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)

func extension(c *x509.Certificate, oid asn1.ObjectIdentifier) (critical, ok bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical, true
		}
	}
	return false, false
}

// checkX509SVID checks an X.509-SVID against the X.509-SVID spec's rules,
// read from the certificate's bytes: it is what integration tests call on
// what containers received, too.
func checkX509SVID(t *testing.T, leaf *x509.Certificate, want spiffeid.ID, lifetime time.Duration) {
	t.Helper()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String() {
		t.Errorf("URI SANs %v, want exactly [%s]", leaf.URIs, want)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("SANs other than the URI: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if _, ok := extension(leaf, oidSubjectAltName); !ok {
		t.Error("no subjectAltName extension")
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("basic constraints valid %v, cA %v; want a leaf with cA false", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if _, ok := extension(leaf, oidBasicConstraints); !ok {
		t.Error("no basicConstraints extension")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %b, want digitalSignature alone (no keyCertSign, no cRLSign)", leaf.KeyUsage)
	}
	if critical, ok := extension(leaf, oidKeyUsage); !ok || !critical {
		t.Errorf("keyUsage extension present %v, critical %v; want critical", ok, critical)
	}
	var server, client bool
	for _, u := range leaf.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !server || !client || len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("extended key usage %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != lifetime {
		t.Errorf("lifetime %s, want %s", got, lifetime)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("public key %T, want ECDSA", leaf.PublicKey)
	}
}

func TestX509SVIDFollowsTheSpec(t *testing.T) {
	ca := newCA(t, 1)
	s, err := ca.IssueX509(brokerI, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(s.Cert)
	if err != nil {
		t.Fatal(err)
	}
	checkX509SVID(t, leaf, brokerI, time.Hour)
	if !leaf.NotBefore.Equal(t0) || !s.NotAfter.Equal(t0.Add(time.Hour)) {
		t.Errorf("valid %s to %s, want from %s for an hour", leaf.NotBefore, leaf.NotAfter, t0)
	}

	// The CA: a signing certificate as the spec has it, and the bundle.
	c := ca.Certificate()
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.KeyUsage&x509.KeyUsageDigitalSignature != 0 {
		t.Errorf("CA certificate: cA %v, key usage %b; want cA and keyCertSign", c.IsCA, c.KeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("CA URI SANs %v, want the trust domain's ID alone", c.URIs)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA certificate is not self-signed: %v", err)
	}

	// go-spiffe parses the pair and verifies the chain against the bundle.
	svid, err := x509svid.ParseRaw(s.Cert, s.Key())
	if err != nil {
		t.Fatalf("go-spiffe refuses the SVID: %v", err)
	}
	if svid.ID != brokerI {
		t.Errorf("go-spiffe reads %s", svid.ID)
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{c})
	if id, _, err := x509svid.Verify([]*x509.Certificate{leaf}, bundle, x509svid.WithTime(t0.Add(time.Minute))); err != nil || id != brokerI {
		t.Errorf("go-spiffe verifies %s, %v", id, err)
	}
	if _, _, err := x509svid.Verify([]*x509.Certificate{leaf}, bundle, x509svid.WithTime(t0.Add(61*time.Minute))); err == nil {
		t.Error("an expired SVID verifies")
	}
	other := newCA(t, 2)
	if _, _, err := x509svid.Verify([]*x509.Certificate{leaf}, x509bundle.FromX509Authorities(td, []*x509.Certificate{other.Certificate()}),
		x509svid.WithTime(t0.Add(time.Minute))); err == nil {
		t.Error("an SVID verifies against another host's CA")
	}

	// Each issuance has a key and a serial of its own.
	s2, err := ca.IssueX509(brokerI, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(s.Key(), s2.Key()) || s.Serial == s2.Serial {
		t.Error("two issuances share a key or a serial")
	}
	s.Zero()
	if !bytes.Equal(s.Key(), make([]byte, len(s.Key()))) {
		t.Error("Zero left the key")
	}
	if _, err := ca.IssueX509(spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("other.org"), "/x"), t0, time.Hour); err == nil {
		t.Error("issued an SVID of another trust domain")
	}
}

// TestCAIsStable: the same seed and trust domain are the same CA and
// bundles, byte for byte (what makes them stable across agent restarts);
// another seed or domain is another.
func TestCAIsStable(t *testing.T) {
	a, b := newCA(t, 1), newCA(t, 1)
	if !bytes.Equal(a.Certificate().Raw, b.Certificate().Raw) || !bytes.Equal(a.JWKS(), b.JWKS()) || a.KeyID() != b.KeyID() {
		t.Fatal("one seed made two different CAs")
	}
	if c := newCA(t, 2); bytes.Equal(c.Certificate().Raw, a.Certificate().Raw) || bytes.Equal(c.JWKS(), a.JWKS()) ||
		c.Certificate().Subject.CommonName == a.Certificate().Subject.CommonName {
		t.Error("another seed made the same CA, JWT key or CA name")
	}
	d, err := LoadCA(spiffeid.RequireTrustDomainFromString("other.org"), seeded(1))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(d.Certificate().Raw, a.Certificate().Raw) || d.Certificate().URIs[0].String() != "spiffe://other.org" {
		t.Error("another trust domain made the same CA certificate")
	}
	// The X.509 and JWT keys are two keys.
	if a.x509Key.Equal(a.jwtKey) {
		t.Error("one key signs X.509-SVIDs and JWT-SVIDs")
	}
	if !a.Certificate().NotAfter.Equal(caNotAfter) || !a.Certificate().NotBefore.Equal(caNotBefore) {
		t.Errorf("CA valid %s to %s", a.Certificate().NotBefore, a.Certificate().NotAfter)
	}
}

func TestLoadCAZeroesTheSeed(t *testing.T) {
	var seen []byte
	if _, err := LoadCA(td, func(dst []byte) error { seen = dst; return seeded(9)(dst) }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != SeedSize || !bytes.Equal(seen, make([]byte, SeedSize)) {
		t.Errorf("seed after LoadCA: %x", seen)
	}
	boom := errors.New("tpm down")
	if _, err := LoadCA(td, func([]byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("LoadCA with a failing fill: %v", err)
	}
	if _, err := LoadCA(spiffeid.TrustDomain{}, seeded(1)); err == nil {
		t.Error("LoadCA without a trust domain")
	}
}

func TestJWTSVID(t *testing.T) {
	ca := newCA(t, 1)
	j, err := ca.SignJWT(brokerI, []string{"mqtt", "spiffe://example.org/client"}, t0, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The header, as the JWT-SVID spec has it.
	var hdr map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(j.Token, ".")[0])
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatal(err)
	}
	if hdr["alg"] != "ES256" || hdr["typ"] != "JWT" || hdr["kid"] != ca.KeyID() || ca.KeyID() == "" {
		t.Errorf("header %v", hdr)
	}
	// A client's view: the JWK Set parsed by go-spiffe, the token checked
	// against it at a time within its lifetime.
	bundle, err := jwtbundle.Parse(td, ca.JWKS())
	if err != nil {
		t.Fatalf("go-spiffe refuses the JWKS: %v", err)
	}
	now := time.Now()
	live, err := ca.SignJWT(brokerI, []string{"mqtt"}, now, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwtsvid.ParseAndValidate(live.Token, bundle, []string{"mqtt"})
	if err != nil || s.ID != brokerI || !s.Expiry.Equal(now.UTC().Truncate(time.Second).Add(5*time.Minute)) {
		t.Fatalf("go-spiffe validates %v, %v", s, err)
	}
	if got, err := ca.ValidateJWT(live.Token, "mqtt"); err != nil || got.ID != brokerI || got.Claims["jti"] != live.JTI {
		t.Errorf("ValidateJWT: %v, %v", got, err)
	}
	other := newCA(t, 2)
	forged, _ := other.SignJWT(brokerI, []string{"mqtt"}, now, 5*time.Minute)
	expired, _ := ca.SignJWT(brokerI, []string{"mqtt"}, now.Add(-time.Hour), 5*time.Minute)
	parts := strings.Split(live.Token, ".")
	for name, tok := range map[string]string{
		"signed by another host's key": forged.Token,
		"expired":                      expired.Token,
		"payload swapped":              parts[0] + "." + strings.Split(forged.Token, ".")[1] + "." + parts[2],
		"not a JWT":                    "hello",
		"alg none":                     b64url([]byte(`{"alg":"none","kid":"`+ca.KeyID()+`"}`)) + "." + parts[1] + ".",
	} {
		if _, err := ca.ValidateJWT(tok, "mqtt"); err == nil {
			t.Errorf("%s: validates", name)
		}
	}
	if _, err := ca.ValidateJWT(live.Token, "http"); err == nil {
		t.Error("validates for an audience it was not issued for")
	}
	if _, err := ca.SignJWT(brokerI, nil, now, time.Minute); err == nil {
		t.Error("signed a JWT-SVID without an audience")
	}
}

// TestKeysNeverPrint: the CA and an SVID print and marshal as redacted.
func TestKeysNeverPrint(t *testing.T) {
	ca := newCA(t, 1)
	s, err := ca.IssueX509(brokerI, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := ca.SignJWT(brokerI, []string{"mqtt"}, t0, time.Minute)
	d, _ := ca.x509Key.Bytes()
	for _, v := range []any{ca, *ca, s, *s, j, *j} {
		for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(f, v)
			for _, secret := range [][]byte{s.Key(), d, []byte(hex.EncodeToString(d)), []byte(j.Token)} {
				if bytes.Contains([]byte(out), secret) {
					t.Errorf("%s of %T shows a key or the token", f, v)
				}
			}
		}
		if _, err := json.Marshal(v); err == nil {
			t.Errorf("%T marshals to JSON", v)
		}
	}
}
