// SPDX-License-Identifier: Apache-2.0

package spire

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/spiffe"
)

// Bounds of one container's share of the SPIRE agent (DESIGN.md §11:
// every bound is per container). A container has one X.509-SVID stream
// to SPIRE whatever it does on its own socket (its streams there all read
// the one state), and at most MaxJWTCalls FetchJWTSVIDs calls at once,
// each within JWTTimeout; its socket's rate limit comes first.
const (
	MaxJWTCalls = 2
	JWTTimeout  = 10 * time.Second
)

// SelectorType is the type of the selector northstar asserts for every
// container: northstar:identity:<identity>.
const SelectorType = "northstar"

// Selectors are what the agent asserts to SPIRE for a container: its
// identity, always, and for a Kubernetes CRI container the selectors
// SPIRE's Kubernetes workload attestor gives (k8s:ns, k8s:pod-name,
// k8s:pod-uid, k8s:container-name), so that entries written for
// Kubernetes workloads match.
func Selectors(identity string, pod *control.Pod) []*types.Selector {
	s := []*types.Selector{{Type: SelectorType, Value: "identity:" + identity}}
	if pod != nil {
		s = append(s,
			&types.Selector{Type: "k8s", Value: "ns:" + pod.Namespace},
			&types.Selector{Type: "k8s", Value: "pod-name:" + pod.Name},
			&types.Selector{Type: "k8s", Value: "container-name:" + pod.Container})
		if pod.UID != "" {
			s = append(s, &types.Selector{Type: "k8s", Value: "pod-uid:" + pod.UID})
		}
	}
	return s
}

// Status is what the agent last learnt from SPIRE for one container:
// `northstarctl status` prints it.
type Status struct {
	// Selectors are those the agent asserts ("type:value").
	Selectors []string `json:"selectors"`
	// Answered says whether SPIRE answered the container's stream, and
	// SPIFFEIDs what it issued (none: no entry matches).
	Answered  bool     `json:"answered"`
	SPIFFEIDs []string `json:"spiffe_ids,omitempty"`
	// Why says why the container has no SVID ("" when it has).
	Why string `json:"why,omitempty"`
}

// Workload is one container's Issuer from SPIRE: one stream of its
// X.509-SVIDs, kept open (and reopened) from the registration until
// Close, and unary calls for its JWT-SVIDs. Safe for concurrent use.
type Workload struct {
	c         *Client
	selectors []*types.Selector
	cancel    context.CancelFunc
	done      chan struct{}
	jwtCalls  chan struct{} // a slot per FetchJWTSVIDs call, MaxJWTCalls

	mu      sync.Mutex    // guards what follows
	svids   []*svid       // nil until SPIRE answered (or after an error)
	fedWith []string      // trust domain IDs the SVIDs federate with
	changed chan struct{} // closed at the next change of svids or of the bundles
	status  Status
}

// svid is one X.509-SVID as SPIRE sent it.
type svid struct {
	id    spiffeid.ID
	chain []byte
	leaf  *x509.Certificate
	key   []byte
	hint  string
}

var _ spiffe.Issuer = (*Workload)(nil)

// Workload starts the SPIRE stream of the container that has identity
// and pod (nil: not a Kubernetes container), and returns at once.
func (c *Client) Workload(identity string, pod *control.Pod) *Workload {
	sel := Selectors(identity, pod)
	ctx, cancel := context.WithCancel(c.ctx)
	w := &Workload{c: c, selectors: sel, cancel: cancel, done: make(chan struct{}), jwtCalls: make(chan struct{}, MaxJWTCalls),
		changed: make(chan struct{}), status: Status{Selectors: selectorStrings(sel), Why: "SPIRE has not answered yet"}}
	c.mu.Lock()
	c.workloads[w] = struct{}{}
	c.mu.Unlock()
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		defer close(w.done)
		w.run(ctx)
	}()
	return w
}

func selectorStrings(sel []*types.Selector) []string {
	out := make([]string, len(sel))
	for i, s := range sel {
		out[i] = s.Type + ":" + s.Value
	}
	return out
}

// Close ends the container's SPIRE stream and forgets its SVIDs: the
// container is gone or revoked. It returns once the stream has ended.
func (w *Workload) Close() {
	w.cancel()
	<-w.done
	w.c.mu.Lock()
	delete(w.c.workloads, w)
	w.c.mu.Unlock()
	w.set(nil, nil, Status{Why: "its SPIRE stream is closed (the container is revoked or gone)"}, false)
}

// Status returns what the agent last learnt from SPIRE for the container.
func (w *Workload) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	s.Selectors = slices.Clone(s.Selectors)
	s.SPIFFEIDs = slices.Clone(s.SPIFFEIDs)
	return s
}

// run keeps the container's X.509-SVID stream open until ctx ends.
func (w *Workload) run(ctx context.Context) {
	backoff := minBackoff
	for {
		err := w.subscribe(ctx, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return
		}
		// No SVID while SPIRE does not answer: the container's socket
		// answers Unavailable (what it was sent stays valid until it
		// expires), as SPIRE's own agent's does.
		w.set(nil, nil, Status{Why: "SPIRE does not answer: " + Describe(err)}, true)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (w *Workload) subscribe(ctx context.Context, answered func()) error {
	s, err := w.c.api.SubscribeToX509SVIDs(ctx, &delegatedidentityv1.SubscribeToX509SVIDsRequest{Selectors: w.selectors})
	if err != nil {
		return err
	}
	return recvAll(s, func() { answered(); w.c.answered() }, func(resp *delegatedidentityv1.SubscribeToX509SVIDsResponse) {
		svids, st := w.c.decode(resp)
		w.set(svids, resp.FederatesWith, st, true)
	})
}

// decode takes the SVIDs of resp that are of the trust domain, zeroing
// the keys in resp.
func (c *Client) decode(resp *delegatedidentityv1.SubscribeToX509SVIDsResponse) ([]*svid, Status) {
	st := Status{Answered: true}
	var out []*svid
	var skipped []string
	for _, in := range resp.X509Svids {
		key := bytes.Clone(in.X509SvidKey)
		clear(in.X509SvidKey)
		s, err := c.decodeSVID(in, key)
		if err != nil {
			clear(key)
			skipped = append(skipped, err.Error())
			continue
		}
		out = append(out, s)
		st.SPIFFEIDs = append(st.SPIFFEIDs, s.id.String())
	}
	switch {
	case len(out) == 0 && len(skipped) == 0:
		st.Why = "no SPIRE entry parented to this node matches the container's selectors"
	case len(out) == 0:
		st.Why = "SPIRE's SVIDs were not served: " + strings.Join(skipped, "; ")
	}
	return out, st
}

func (c *Client) decodeSVID(in *delegatedidentityv1.X509SVIDWithKey, key []byte) (*svid, error) {
	v := in.GetX509Svid()
	if v == nil || len(v.CertChain) == 0 || v.Id == nil {
		return nil, fmt.Errorf("an SVID without certificates or id")
	}
	td, err := spiffeid.TrustDomainFromString(v.Id.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("SVID trust domain %q: %w", v.Id.TrustDomain, err)
	}
	id, err := spiffeid.FromPath(td, v.Id.Path)
	if err != nil {
		return nil, fmt.Errorf("SVID id: %w", err)
	}
	if !id.MemberOf(c.td) {
		return nil, fmt.Errorf("%s is not in trust domain %s ([spiffe] trust_domain)", id, c.td)
	}
	leaf, err := x509.ParseCertificate(v.CertChain[0])
	if err != nil {
		return nil, fmt.Errorf("SVID %s: %w", id, err)
	}
	return &svid{id: id, chain: bytes.Join(v.CertChain, nil), leaf: leaf, key: key, hint: v.Hint}, nil
}

// set replaces the container's SVIDs and status, and wakes its streams.
// keepUntilExpiry keeps SVIDs that are still valid when none come (SPIRE
// went away): what the container was given stays usable, as it would.
func (w *Workload) set(svids []*svid, fedWith []string, st Status, keepUntilExpiry bool) {
	w.mu.Lock()
	if svids == nil && keepUntilExpiry && !st.Answered {
		now := time.Now()
		for _, s := range w.svids {
			if now.Before(s.leaf.NotAfter) {
				svids = append(svids, s)
			} else {
				clear(s.key)
			}
		}
		fedWith = w.fedWith
	} else {
		for _, s := range w.svids {
			clear(s.key)
		}
	}
	w.svids, w.fedWith = svids, fedWith
	st.Selectors = w.status.Selectors
	if !st.Answered && len(svids) > 0 {
		// Still served from the last answer.
		st.SPIFFEIDs = w.status.SPIFFEIDs
	}
	same := st.Answered == w.status.Answered && st.Why == w.status.Why && slices.Equal(st.SPIFFEIDs, w.status.SPIFFEIDs)
	w.status = st
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if !same {
		w.c.changed()
	}
}

// X509SVIDs implements spiffe.Issuer.
func (w *Workload) X509SVIDs() (*spiffe.X509Update, error) {
	w.c.mu.Lock()
	bundles := w.c.x509
	w.c.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.svids == nil && !w.status.Answered {
		return nil, fmt.Errorf("%w: %s", spiffe.ErrUnavailable, w.status.Why)
	}
	if bundles == nil {
		return nil, fmt.Errorf("%w: %s", spiffe.ErrUnavailable, errNoBundles)
	}
	u := &spiffe.X509Update{Bundle: bundles[w.c.td.IDString()], Changed: w.changed}
	for _, td := range w.fedWith {
		if b, ok := bundles[td]; ok {
			if u.FederatedBundles == nil {
				u.FederatedBundles = map[string][]byte{}
			}
			u.FederatedBundles[td] = b
		}
	}
	now := time.Now()
	for _, s := range w.svids {
		if !now.Before(s.leaf.NotAfter) {
			continue
		}
		u.SVIDs = append(u.SVIDs, spiffe.NewX509SVID(s.id, s.chain, s.leaf, bytes.Clone(s.key), s.hint))
		// Asked again when it expires, should SPIRE stay away that long.
		if u.Renew.IsZero() || s.leaf.NotAfter.Before(u.Renew) {
			u.Renew = s.leaf.NotAfter
		}
	}
	return u, nil
}

// bump wakes the container's streams: the bundles changed.
func (w *Workload) bump() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// X509Bundles implements spiffe.Issuer.
func (w *Workload) X509Bundles() (map[string][]byte, <-chan struct{}, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if w.c.x509 == nil {
		return nil, nil, fmt.Errorf("%w: %s", spiffe.ErrUnavailable, errNoBundles)
	}
	return maps.Clone(w.c.x509), w.c.bundles, nil
}

// JWTBundles implements spiffe.Issuer.
func (w *Workload) JWTBundles() (map[string][]byte, <-chan struct{}, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if w.c.jwt == nil {
		return nil, nil, fmt.Errorf("%w: %s", spiffe.ErrUnavailable, errNoBundles)
	}
	return maps.Clone(w.c.jwt), w.c.bundles, nil
}

// JWTSVIDs implements spiffe.Issuer: FetchJWTSVIDs for the container's
// selectors, at most MaxJWTCalls at once per container.
func (w *Workload) JWTSVIDs(ctx context.Context, audience []string) ([]*spiffe.JWTSVID, error) {
	select {
	case w.jwtCalls <- struct{}{}:
		defer func() { <-w.jwtCalls }()
	default:
		return nil, fmt.Errorf("%w: %d JWT-SVID requests of this container are with SPIRE already", spiffe.ErrUnavailable, MaxJWTCalls)
	}
	ctx, cancel := context.WithTimeout(ctx, JWTTimeout)
	defer cancel()
	resp, err := w.c.api.FetchJWTSVIDs(ctx, &delegatedidentityv1.FetchJWTSVIDsRequest{Audience: audience, Selectors: w.selectors})
	if status.Code(err) == codes.PermissionDenied && strings.Contains(status.Convert(err).Message(), "no identity issued") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: SPIRE: %s", spiffe.ErrUnavailable, Describe(err))
	}
	var out []*spiffe.JWTSVID
	for _, in := range resp.Svids {
		s, err := jwtsvid.ParseInsecure(in.Token, audience)
		if err != nil || !s.ID.MemberOf(w.c.td) {
			continue
		}
		jti, _ := s.Claims["jti"].(string)
		out = append(out, &spiffe.JWTSVID{ID: s.ID, Token: in.Token, JTI: jti, Expiry: s.Expiry, Audience: audience, Hint: in.Hint})
	}
	return out, nil
}

// ValidateJWT implements spiffe.Issuer: against SPIRE's JWT bundles, the
// trust domain's and its federated ones.
func (w *Workload) ValidateJWT(token, audience string) (*jwtsvid.SVID, error) {
	w.c.mu.Lock()
	set := w.c.jwtSet
	w.c.mu.Unlock()
	if set == nil {
		return nil, fmt.Errorf("validate jwt-svid: %s", errNoBundles)
	}
	s, err := jwtsvid.ParseAndValidate(token, set, []string{audience})
	if err != nil {
		return nil, fmt.Errorf("validate jwt-svid: %w", err)
	}
	return s, nil
}
