// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// X509SVID is one issued X.509-SVID and its private key. The key is made
// for this issuance alone; the caller sends it and calls Zero, and the
// agent keeps no copy. It will not print or marshal.
type X509SVID struct {
	ID       spiffeid.ID
	Cert     []byte // the chain, DER, leaf first: the local CA's leaf (then its intermediate under an external root), or SPIRE's chain
	Serial   string // hex
	NotAfter time.Time
	Lifetime time.Duration // NotAfter - NotBefore
	Hint     string        // the SPIRE entry's hint, if any
	key      []byte        // PKCS #8, DER
}

// NewX509SVID is an X.509-SVID another issuer made: chain is its DER
// certificates concatenated, leaf first, and key its PKCS #8 key, which
// the X509SVID owns from here on (Zero clears it).
func NewX509SVID(id spiffeid.ID, chain []byte, leaf *x509.Certificate, key []byte, hint string) *X509SVID {
	return &X509SVID{ID: id, Cert: chain, Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()), NotAfter: leaf.NotAfter,
		Lifetime: leaf.NotAfter.Sub(leaf.NotBefore), Hint: hint, key: key}
}

// Key is the SVID's private key, PKCS #8 DER, until Zero.
func (s *X509SVID) Key() []byte { return s.key }

// Zero overwrites the private key.
func (s *X509SVID) Zero() {
	if s != nil {
		clear(s.key)
	}
}

func (X509SVID) String() string                 { return "spiffe.X509SVID{[redacted]}" }
func (X509SVID) GoString() string               { return "spiffe.X509SVID{[redacted]}" }
func (X509SVID) MarshalJSON() ([]byte, error)   { return nil, ErrNotSerializable }
func (X509SVID) MarshalText() ([]byte, error)   { return nil, ErrNotSerializable }
func (X509SVID) MarshalBinary() ([]byte, error) { return nil, ErrNotSerializable }

// IssueX509 issues an X.509-SVID for id, valid from now for ttl: a fresh
// P-256 key, and a leaf as the X.509-SVID spec (§4, §5) requires it:
// exactly one URI SAN, the SPIFFE ID; basic constraints with cA false;
// key usage (critical, as crypto/x509 always marks it) digitalSignature
// alone, so neither keyCertSign nor cRLSign; extended key usage serverAuth
// and clientAuth, for mutual TLS either way round.
func (ca *CA) IssueX509(id spiffeid.ID, now time.Time, ttl time.Duration) (*X509SVID, error) {
	if !id.MemberOf(ca.td) {
		return nil, fmt.Errorf("issue x509-svid: %s is not in trust domain %s", id, ca.td)
	}
	if ttl <= 0 {
		return nil, errors.New("issue x509-svid: no lifetime")
	}
	iss, err := ca.currentIssuer()
	if err != nil {
		return nil, fmt.Errorf("issue x509-svid: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue x509-svid: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue x509-svid: %w", err)
	}
	// Second resolution, as the certificate has it: NotAfter - NotBefore
	// is exactly ttl.
	notBefore := now.UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"northstar"}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
	}
	// No SVID outlives the intermediate that signs it.
	if tmpl.NotAfter.After(iss.cert.NotAfter) {
		tmpl.NotAfter = iss.cert.NotAfter
		ttl = tmpl.NotAfter.Sub(notBefore)
		if ttl <= 0 {
			return nil, fmt.Errorf("issue x509-svid: the intermediate expired at %s and no new one was signed (is the TPM reachable?)",
				iss.cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.cert, &key.PublicKey, iss.key)
	if err != nil {
		return nil, fmt.Errorf("issue x509-svid: create certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue x509-svid: marshal key: %w", err)
	}
	der = append(der, iss.chain...) // the leaf, then its intermediate if any
	return &X509SVID{ID: id, Cert: der, Serial: hex.EncodeToString(serial.Bytes()), NotAfter: tmpl.NotAfter, Lifetime: ttl, key: pkcs8}, nil
}

// JWTSVID is one issued JWT-SVID. The token is a bearer credential for its
// audiences until it expires: never log it.
type JWTSVID struct {
	ID       spiffeid.ID
	Token    string
	JTI      string // the token's jti, which the audit log names
	Expiry   time.Time
	Audience []string
	Hint     string // the SPIRE entry's hint, if any
}

func (JWTSVID) String() string               { return "spiffe.JWTSVID{[redacted]}" }
func (JWTSVID) GoString() string             { return "spiffe.JWTSVID{[redacted]}" }
func (JWTSVID) MarshalJSON() ([]byte, error) { return nil, ErrNotSerializable }

// SignJWT issues a JWT-SVID (JWT-SVID spec §3) for id and audience, valid
// from now for ttl: ES256 under the CA's JWT key, header kid and typ JWT,
// claims sub, aud, exp, iat and a random jti (which the audit log names
// instead of the token).
func (ca *CA) SignJWT(id spiffeid.ID, audience []string, now time.Time, ttl time.Duration) (*JWTSVID, error) {
	if !id.MemberOf(ca.td) {
		return nil, fmt.Errorf("sign jwt-svid: %s is not in trust domain %s", id, ca.td)
	}
	if len(audience) == 0 || ttl <= 0 {
		return nil, errors.New("sign jwt-svid: no audience or no lifetime")
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return nil, fmt.Errorf("sign jwt-svid: read random: %w", err)
	}
	iat := now.UTC().Truncate(time.Second)
	c := jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(audience),
		Expiry:   jwt.NewNumericDate(iat.Add(ttl)),
		IssuedAt: jwt.NewNumericDate(iat),
		ID:       hex.EncodeToString(jti),
	}
	tok, err := jwt.Signed(ca.signer).Claims(c).Serialize()
	if err != nil {
		return nil, fmt.Errorf("sign jwt-svid: %w", err)
	}
	return &JWTSVID{ID: id, Token: tok, JTI: c.ID, Expiry: iat.Add(ttl), Audience: audience}, nil
}

// ValidateJWT validates token for audience as the JWT-SVID spec requires,
// with go-spiffe's validator against this trust domain's JWT bundle: ES256
// (or another algorithm the spec allows) under a key of the bundle named
// by kid, typ JWT or JOSE if present, not expired, audience among its aud,
// and sub a SPIFFE ID of this trust domain.
func (ca *CA) ValidateJWT(token, audience string) (*jwtsvid.SVID, error) {
	s, err := jwtsvid.ParseAndValidate(token, ca.jwt, []string{audience})
	if err != nil {
		return nil, fmt.Errorf("validate jwt-svid: %w", err)
	}
	return s, nil
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
