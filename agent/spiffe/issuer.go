// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// Issuer is where one container's SVIDs and bundles come from (DESIGN.md
// §16): Local, the agent's per-host CA ([spiffe] issuer = "local"), or a
// SPIRE agent through its Delegated Identity API (package spire,
// issuer = "spire"). A Server asks its Issuer at every message it sends;
// the Issuer never blocks on a remote party, so that a container's socket
// answers at once, with Unavailable if need be.
//
// Errors: one wrapping ErrUnavailable is answered Unavailable (the client
// retries after a backoff, as with SPIRE's own agent); X509SVIDs with no
// SVID and no error means no identity is issued to the container (no
// SPIRE entry matches it), answered PermissionDenied as SPIRE does.
type Issuer interface {
	// X509SVIDs returns the container's X.509-SVIDs now, each with a key
	// the caller zeroes once sent.
	X509SVIDs() (*X509Update, error)
	// X509Bundles returns the X.509 bundles, keyed by trust domain ID
	// ("spiffe://example.org"), each ASN.1 DER certificates concatenated,
	// and a channel closed when they change.
	X509Bundles() (map[string][]byte, <-chan struct{}, error)
	// JWTBundles returns the JWT bundles (JWK Sets), keyed so, and a
	// channel closed when they change.
	JWTBundles() (map[string][]byte, <-chan struct{}, error)
	// JWTSVIDs issues the container's JWT-SVIDs for audience.
	JWTSVIDs(ctx context.Context, audience []string) ([]*JWTSVID, error)
	// ValidateJWT validates a JWT-SVID for audience against the JWT
	// bundles.
	ValidateJWT(token, audience string) (*jwtsvid.SVID, error)
}

// ErrUnavailable is wrapped by an Issuer's errors that the caller should
// retry later.
var ErrUnavailable = errors.New("no SVID can be issued now")

// X509Update is a container's X.509 state: every message of a
// FetchX509SVID stream carries all of it.
type X509Update struct {
	SVIDs []*X509SVID
	// Bundle is the X.509 bundle of the SVIDs' trust domain;
	// FederatedBundles those of the trust domains they federate with,
	// keyed by trust domain ID.
	Bundle           []byte
	FederatedBundles map[string][]byte
	// Renew, if set, is when to ask again; Changed is closed when the
	// state changes before.
	Renew   time.Time
	Changed <-chan struct{}
}

// Zero zeroes every SVID's key.
func (u *X509Update) Zero() {
	if u == nil {
		return
	}
	for _, s := range u.SVIDs {
		s.Zero()
	}
}

// Local is the Issuer of one container under the agent's per-host CA: a
// fresh key and X.509-SVID at every call (renewed at half of its lifetime
// and at every rotation of the lifecycle secret), JWT-SVIDs signed on the
// spot, and the one trust domain's bundles, which do not change.
type Local struct {
	ca              *CA
	id              spiffeid.ID
	life            Lifecycle
	x509TTL, jwtTTL time.Duration
	now             func() time.Time
	federated       Federated // other trust domains' bundles (nil: none)
}

var _ Issuer = (*Local)(nil)

// NewLocal returns the local Issuer of the container whose identity is
// ident: its SPIFFE ID is spiffe://<trust domain><path>, the path
// identity.SPIFFEPath maps ident to.
func NewLocal(ca *CA, ident string, life Lifecycle, x509TTL, jwtTTL time.Duration) (*Local, error) {
	id, err := LocalID(ca.TrustDomain(), ident)
	if err != nil {
		return nil, err
	}
	return &Local{ca: ca, id: id, life: life, x509TTL: x509TTL, jwtTTL: jwtTTL, now: time.Now}, nil
}

// ID is the SPIFFE ID the issuer issues SVIDs for.
func (l *Local) ID() spiffeid.ID { return l.id }

// X509SVIDs implements Issuer.
func (l *Local) X509SVIDs() (*X509Update, error) {
	_, rotated := l.life.Generation()
	svid, err := l.ca.IssueX509(l.id, l.now(), l.x509TTL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	fed, _ := federatedOf(l.federated, l.ca.TrustDomain()) // the Server watches their changes
	return &X509Update{SVIDs: []*X509SVID{svid}, Bundle: l.ca.Certificate().Raw, FederatedBundles: fed,
		Renew: svid.NotAfter.Add(-svid.Lifetime / 2), Changed: rotated}, nil
}

// X509Bundles implements Issuer: the CA certificate, which does not
// change while the agent runs (see CA), and the federated trust domains'.
func (l *Local) X509Bundles() (map[string][]byte, <-chan struct{}, error) {
	fed, changed := federatedOf(l.federated, l.ca.TrustDomain())
	b := map[string][]byte{l.ca.TrustDomain().IDString(): l.ca.Certificate().Raw}
	maps.Copy(b, fed)
	return b, changed, nil
}

// JWTBundles implements Issuer: a JWK Set of the CA's JWT signing key.
func (l *Local) JWTBundles() (map[string][]byte, <-chan struct{}, error) {
	return map[string][]byte{l.ca.TrustDomain().IDString(): l.ca.JWKS()}, nil, nil
}

// JWTSVIDs implements Issuer.
func (l *Local) JWTSVIDs(_ context.Context, audience []string) ([]*JWTSVID, error) {
	svid, err := l.ca.SignJWT(l.id, audience, l.now(), l.jwtTTL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return []*JWTSVID{svid}, nil
}

// ValidateJWT implements Issuer.
func (l *Local) ValidateJWT(token, audience string) (*jwtsvid.SVID, error) {
	return l.ca.ValidateJWT(token, audience)
}
