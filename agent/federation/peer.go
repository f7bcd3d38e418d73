// SPDX-License-Identifier: Apache-2.0

package federation

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/northstar-oci/northstar/attest"
)

// Peer is one [[federation.peer]]: a northstar host of another trust
// domain and what its TPM must show.
type Peer struct {
	TrustDomain spiffeid.TrustDomain
	// BundleURL is its bundle endpoint; EvidenceURL where it answers with
	// evidence.
	BundleURL, EvidenceURL string
	// EKRoots and EKIntermediates are its TPM maker's CAs; EK is its EK
	// (PKIX DER): another is refused.
	EKRoots, EKIntermediates *x509.CertPool
	EK                       []byte
	// PCRs are the SHA-256 values its quoted PCRs must hold.
	PCRs map[int][]byte
}

// Bounds of what a peer may send and take.
const (
	// MaxBundle bounds a bundle endpoint's answer: a JWK Set of a few
	// keys is a few KiB.
	MaxBundle = 256 << 10
	// MinRecheck is the shortest time between two checks of a peer.
	MinRecheck = 500 * time.Millisecond
)

// Options configure Watch.
type Options struct {
	Peers []Peer
	// Timeout bounds one check of a peer, all its requests together.
	Timeout time.Duration
	// MaxRefresh is the longest a bundle is trusted without a new check:
	// a peer's refresh hint is capped at it ([federation] refresh_hint).
	// A peer is checked again at 80 % of its hint.
	MaxRefresh time.Duration
	// Log gets one line per change of a peer's state.
	Log io.Writer
}

// Watch checks every peer now and then at 80 % of its refresh hint, until
// ctx ends, keeping set to the peers that passed their last check. It
// returns at once; done is closed when every peer's goroutine returned.
func Watch(ctx context.Context, set *Set, opts Options) (done <-chan struct{}) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxRefresh <= 0 {
		opts.MaxRefresh = 5 * time.Minute
	}
	ch := make(chan struct{})
	left := make(chan struct{}, len(opts.Peers))
	for _, p := range opts.Peers {
		go func() {
			defer func() { left <- struct{}{} }()
			watch(ctx, set, opts, p)
		}()
	}
	go func() {
		for range opts.Peers {
			<-left
		}
		close(ch)
	}()
	return ch
}

func watch(ctx context.Context, set *Set, opts Options, p Peer) {
	for {
		hint, der, err := check(ctx, opts, p)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			hint, der = opts.MaxRefresh, nil
		}
		wait := max(MinRecheck, hint*8/10)
		now := time.Now()
		reason := ""
		if err != nil {
			reason = err.Error()
		}
		if set.set(p.TrustDomain, der, reason, now, now.Add(wait)) {
			if err != nil {
				fmt.Fprintf(opts.Log, "northstar agent: federation: peer %s refused, its bundle is not trusted: %v\n", p.TrustDomain.Name(), err)
			} else {
				fmt.Fprintf(opts.Log, "northstar agent: federation: peer %s attested, its bundle is trusted; checked again every %s\n", p.TrustDomain.Name(), wait)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// check verifies p's evidence with a fresh challenge and fetches its
// bundle, returning the bundle's refresh hint (capped at opts.MaxRefresh)
// and the DER of its one X.509 authority, the certified TPM root.
func check(ctx context.Context, opts Options, p Peer) (time.Duration, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	proof, err := attestPeer(ctx, p)
	if err != nil {
		return 0, nil, err
	}
	root := proof.Root
	b, err := fetchBundle(ctx, p, root)
	if err != nil {
		return 0, nil, err
	}
	auth := b.X509Authorities()
	if len(auth) != 1 || !auth[0].Equal(root) {
		return 0, nil, fmt.Errorf("the bundle's X.509 authorities (%d) are not the root its TPM certified", len(auth))
	}
	hint := opts.MaxRefresh
	if h, ok := b.RefreshHint(); ok && h > 0 && h < hint {
		hint = h
	}
	return hint, root.Raw, nil
}

// attestPeer asks p for evidence over a nonce, challenges the AK it shows
// (credential activation to the pinned EK: only that TPM can answer), and
// verifies the answer against p's EK and PCR policy.
func attestPeer(ctx context.Context, p Peer) (*attest.Proof, error) {
	nonce := make([]byte, attest.MaxNonce)
	if _, err := crand.Read(nonce); err != nil {
		return nil, err
	}
	policy := attest.Policy{Nonce: nonce, EKRoots: p.EKRoots, EKIntermediates: p.EKIntermediates, EK: p.EK, PCRs: p.PCRs}
	// The evidence is checked in full before it is challenged, so that a
	// peer that changed its EK or its PCRs is named as such.
	u, err := url.Parse(p.EvidenceURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("nonce", hex.EncodeToString(nonce))
	u.RawQuery = q.Encode()
	ev, err := evidence(ctx, http.MethodGet, p.EvidenceURL, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if _, err := attest.Verify(ev, policy); err != nil {
		return nil, err
	}
	ch, secret, err := attest.NewChallenge(ev)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(ch)
	if err != nil {
		return nil, err
	}
	ans, err := evidence(ctx, http.MethodPost, p.EvidenceURL, p.EvidenceURL, body)
	if err != nil {
		return nil, err
	}
	policy.Nonce, policy.Challenge = secret, ch
	return attest.Verify(ans, policy)
}

// evidence makes one request to u, the evidence endpoint name with its
// query, and parses the answer, read up to attest.MaxEvidence.
//
// Its TLS is not authenticated: the evidence authenticates itself (a quote
// by an AK the pinned EK's TPM holds, over our nonce), and the bundle is
// then fetched over TLS authenticated by the root it certifies. A man in
// the middle can only relay what the peer's TPM says.
func evidence(ctx context.Context, method, name, u string, body []byte) (*attest.Evidence, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // see above
	b, err := request(ctx, tr, method, u, body, attest.MaxEvidence)
	if err != nil {
		return nil, fmt.Errorf("evidence from %s: %w", name, err)
	}
	return attest.ParseEvidence(b)
}

// fetchBundle fetches p's bundle over TLS authenticated as p's bundle
// endpoint under root. It is go-spiffe's federation.FetchBundle with the
// body bounded (FetchBundle reads all a peer sends).
func fetchBundle(ctx context.Context, p Peer, root *x509.Certificate) (*spiffebundle.Bundle, error) {
	src := x509bundle.FromX509Authorities(p.TrustDomain, []*x509.Certificate{root})
	id, err := spiffeid.FromPath(p.TrustDomain, EndpointPath)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(id))}
	b, err := request(ctx, tr, http.MethodGet, p.BundleURL, nil, MaxBundle)
	if err != nil {
		return nil, fmt.Errorf("bundle from %s: %w", p.BundleURL, err)
	}
	bundle, err := spiffebundle.Parse(p.TrustDomain, b)
	if err != nil {
		return nil, fmt.Errorf("bundle from %s does not parse: %w", p.BundleURL, err)
	}
	return bundle, nil
}

// request sends a request over tr and returns the body of its 200 answer,
// refusing more than limit bytes. A 503 (the peer's TPM is answering
// another verifier) is asked again after a short random pause, until ctx
// ends.
func request(ctx context.Context, tr *http.Transport, method, u string, body []byte, limit int64) ([]byte, error) {
	defer tr.CloseIdleConnections()
	for {
		b, err := requestOnce(ctx, tr, method, u, body, limit)
		if !errors.Is(err, errBusy) {
			return b, err
		}
		t := time.NewTimer(100*time.Millisecond + rand.N(200*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errors.New("its TPM was busy with other verifiers until the check's timeout ([federation] timeout)")
		case <-t.C:
		}
	}
}

// errBusy is a peer's 503.
var errBusy = errors.New("busy")

func requestOnce(ctx context.Context, tr *http.Transport, method, u string, body []byte, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return nil, timeoutError(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err == nil {
		// A body cut short by the deadline may read as a clean end.
		err = ctx.Err()
	}
	if err != nil {
		return nil, timeoutError(ctx, err)
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		return nil, fmt.Errorf("%w: %s: %.200q", errBusy, resp.Status, bytes.TrimSpace(b))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %.200q", resp.Status, bytes.TrimSpace(b))
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("the answer is larger than %d bytes", limit)
	}
	return b, nil
}

// timeoutError names a deadline as the peer's slowness.
func timeoutError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errors.New("no answer within the check's timeout ([federation] timeout)")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
