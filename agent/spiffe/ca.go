// SPDX-License-Identifier: Apache-2.0

// Package spiffe is the agent's SPIFFE Workload API (DESIGN.md §14): a
// per-host certificate authority for one trust domain, the X.509-SVIDs and
// JWT-SVIDs it issues, and a gRPC server of go-spiffe's generated
// SpiffeWorkloadAPI for one container's socket.
//
// The Workload Endpoint spec lets "an orchestrator place a Unix Domain
// Socket into a particular container" to authenticate the workload: a
// Server is made for one identity and never asks the caller who it is, as
// the HTTP API (package api) does not. SPIRE's agent instead attests each
// caller by SO_PEERCRED PID -> cgroup, the source of its users' races and
// PID-reuse reports (spire#462, #1216, #6035); here there is nothing to
// look up, so nothing to race.
package spiffe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// KeyName is the name of the CA's seed in the store (store.Key): sealed
// like the agent's root key and, like it, kept across rotations of the
// lifecycle secret, so that the CA, its certificate and the JWT signing
// key outlive every rotation and agent restart.
const KeyName = "spiffe-ca"

// SeedSize is the size of the CA's seed.
const SeedSize = 32

// ErrNotSerializable is returned by every marshaler of CA and X509SVID.
var ErrNotSerializable = errors.New("spiffe: private keys are never serialized")

// The CA certificate's validity. It is a pure function of the seed and the
// trust domain (see caCertificate), so its validity cannot be "from now":
// it starts before any northstar could have made it and does not end
// (RFC 5280 §4.1.2.5's 99991231235959Z: "no well-defined expiration
// date"). The CA lives as long as its sealed key; replacing that key (see
// docs/spiffe.md) is how it is replaced.
var (
	caNotBefore = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// CA is the per-host SPIFFE certificate authority of one trust domain: an
// ECDSA P-256 key that signs X.509-SVIDs under a self-signed CA
// certificate, and a second P-256 key that signs JWT-SVIDs (ES256). Both
// derive from one sealed seed (HKDF-SHA256, a label each), and the CA
// certificate is signed deterministically (RFC 6979), so the same seed and
// trust domain give byte-identical bundles after every agent restart: a
// peer holding yesterday's bundle still verifies today's SVIDs, and an
// open bundle stream has nothing to push.
//
// Like keys.Root it will not print, log or marshal itself. Its private
// keys live in crypto/ecdsa's own representation on the Go heap for the
// agent's life (the agent disables core dumps and ptrace, see agent.harden);
// the seed is zeroed once they are derived.
type CA struct {
	td      spiffeid.TrustDomain
	x509Key *ecdsa.PrivateKey // signs X.509-SVIDs
	cert    *x509.Certificate // the trust domain's X.509 bundle, alone
	jwtKey  *ecdsa.PrivateKey // signs JWT-SVIDs
	kid     string            // the JWT key's id: its RFC 7638 thumbprint
	signer  jose.Signer       // ES256 with kid, typ JWT
	jwks    []byte            // the JWT bundle as a JWK Set
	jwt     *jwtbundle.Bundle // the same, to validate with
	// issuer, when set (UseRoot), holds the intermediate that signs
	// X.509-SVIDs under cert, a root whose key is elsewhere.
	issuer *atomic.Pointer[issuer]
}

// LoadCA makes the CA of td from the seed fill writes (SeedSize bytes; the
// agent reads them from the store, KeyName, in a child process); the seed
// is zeroed before LoadCA returns.
func LoadCA(td spiffeid.TrustDomain, fill func(dst []byte) error) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("spiffe ca: no trust domain")
	}
	seed := make([]byte, SeedSize)
	defer clear(seed)
	if err := fill(seed); err != nil {
		return nil, fmt.Errorf("spiffe ca: seed: %w", err)
	}
	x509Key, err := deriveP256(seed, "northstar/v1/spiffe/x509-ca")
	if err != nil {
		return nil, err
	}
	jwtKey, err := deriveP256(seed, "northstar/v1/spiffe/jwt")
	if err != nil {
		return nil, err
	}
	cert, err := caCertificate(td, x509Key)
	if err != nil {
		return nil, err
	}
	kid, err := (&jose.JSONWebKey{Key: &jwtKey.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("spiffe ca: jwk thumbprint: %w", err)
	}
	ca := &CA{td: td, x509Key: x509Key, cert: cert, jwtKey: jwtKey, kid: b64url(kid)}
	ca.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: jwtKey, KeyID: ca.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("spiffe ca: jwt signer: %w", err)
	}
	ca.jwt = jwtbundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{ca.kid: &jwtKey.PublicKey})
	if ca.jwks, err = ca.jwt.Marshal(); err != nil {
		return nil, fmt.Errorf("spiffe ca: jwks: %w", err)
	}
	return ca, nil
}

// deriveP256 derives a P-256 private key from seed for purpose: HKDF
// output taken as the scalar, rejection-sampled (FIPS 186-5 A.2.2) with a
// counter in the label, since a scalar must be below the group order
// (about one try in 2^32 is not).
func deriveP256(seed []byte, purpose string) (*ecdsa.PrivateKey, error) {
	for i := 0; i < 16; i++ {
		d, err := hkdf.Key(sha256.New, seed, nil, purpose+"/"+strconv.Itoa(i), 32)
		if err != nil {
			return nil, fmt.Errorf("spiffe ca: hkdf: %w", err)
		}
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		clear(d)
		if err == nil {
			return k, nil
		}
	}
	return nil, errors.New("spiffe ca: no valid P-256 scalar from the seed")
}

// caCertificate is the self-signed CA certificate of td for key: every
// field a function of them, and the signature deterministic (RFC 6979:
// crypto/ecdsa signs so when given no randomness), so it is the same
// certificate at every agent start.
func caCertificate(td spiffeid.TrustDomain, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("spiffe ca: public key: %w", err)
	}
	sum := sha256.Sum256(pub)
	serial := new(big.Int).SetBytes(sum[:16])
	serial.SetBit(serial, 127, 1) // positive, 16 bytes, never zero
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Another host's CA of the same trust domain has another key: its
		// name differs too, so that a bundle holding both stays unambiguous.
		Subject:               pkix.Name{Organization: []string{"northstar"}, CommonName: "northstar SPIFFE CA " + hex.EncodeToString(sum[:8])},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs leaves only
		KeyUsage:              x509.KeyUsageCertSign,
		SubjectKeyId:          sum[:20],
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, &key.PublicKey, deterministic{key})
	if err != nil {
		return nil, fmt.Errorf("spiffe ca: create certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// deterministic signs with RFC 6979 nonces whatever reader it is given.
type deterministic struct{ k *ecdsa.PrivateKey }

func (d deterministic) Public() crypto.PublicKey { return d.k.Public() }
func (d deterministic) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return d.k.Sign(nil, digest, opts)
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate is the CA certificate: the trust domain's X.509 bundle.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// JWKS is the trust domain's JWT bundle, a JWK Set of the one ES256 key.
func (ca *CA) JWKS() []byte { return ca.jwks }

// KeyID is the id ("kid") of the JWT signing key.
func (ca *CA) KeyID() string { return ca.kid }

func (CA) String() string                 { return "spiffe.CA{[redacted]}" }
func (CA) GoString() string               { return "spiffe.CA{[redacted]}" }
func (CA) MarshalJSON() ([]byte, error)   { return nil, ErrNotSerializable }
func (CA) MarshalText() ([]byte, error)   { return nil, ErrNotSerializable }
func (CA) MarshalBinary() ([]byte, error) { return nil, ErrNotSerializable }

// randomSerial is a leaf's serial number: 128 random bits, positive.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	s := new(big.Int).SetBytes(b)
	s.SetBit(s, 127, 1)
	return s, nil
}
