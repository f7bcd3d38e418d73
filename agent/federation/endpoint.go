// SPDX-License-Identifier: Apache-2.0

package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/netutil"

	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/attest"
)

// EndpointPath is the path of the SPIFFE ID the bundle endpoint presents
// (https_spiffe): spiffe://<trust domain>/_northstar/bundle-endpoint. No
// container can have it: identity.SPIFFEPath writes '_' only as an escape
// followed by two hex digits, or as a whole segment.
const EndpointPath = "/_northstar/bundle-endpoint"

// Paths the endpoint serves.
const (
	BundlePath   = "/bundle"
	EvidencePath = "/evidence"
)

// Bounds of the endpoint.
const (
	// maxChallenge bounds a POSTed challenge: an AK's public area, an EK
	// and a credential are about 1 KiB.
	maxChallenge = 16 << 10
	// maxConns bounds the endpoint's open connections; more wait in the
	// listener's backlog.
	maxConns = 64
	// endpointSVIDTTL is the lifetime of the endpoint's X.509-SVID; a new
	// one is issued at half of it.
	endpointSVIDTTL = time.Hour
)

// Attester answers with evidence: *attest.Attester.
type Attester interface {
	Evidence(ctx context.Context, nonce []byte) (*attest.Evidence, error)
	Answer(ctx context.Context, ch *attest.Challenge) (*attest.Evidence, error)
}

// CA is what the endpoint needs of the agent's SPIFFE CA.
type CA interface {
	TrustDomain() spiffeid.TrustDomain
	Certificate() *x509.Certificate
	IssueX509(id spiffeid.ID, now time.Time, ttl time.Duration) (*spiffe.X509SVID, error)
}

// EndpointOptions configure Serve.
type EndpointOptions struct {
	CA       CA
	Attester Attester
	// RefreshHint is the hint the bundle carries.
	RefreshHint time.Duration
	// Timeout bounds one request, the TPM's answer included.
	Timeout time.Duration
	Log     io.Writer
}

// Serve serves the bundle endpoint and the evidence on ln until ctx
// ends. Evidence takes the TPM (tens to hundreds of ms a quote on a
// discrete one): one request is answered at a time and the others are
// told to retry (503), so that a stranger cannot queue the TPM up.
func Serve(ctx context.Context, ln net.Listener, opts EndpointOptions) error {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Timeout <= 0 {
		return errors.New("federation: the endpoint needs a timeout")
	}
	td := opts.CA.TrustDomain()
	id, err := spiffeid.FromPath(td, EndpointPath)
	if err != nil {
		return err
	}
	b := spiffebundle.New(td)
	b.AddX509Authority(opts.CA.Certificate())
	b.SetRefreshHint(opts.RefreshHint)
	bundle, err := federation.NewHandler(td, b)
	if err != nil {
		return err
	}
	e := &endpoint{opts: opts, tpm: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.Handle("GET "+BundlePath, bundle)
	mux.HandleFunc("GET "+EvidencePath, e.evidence)
	mux.HandleFunc("POST "+EvidencePath, e.answer)
	cert := &svidCert{ca: opts.CA, id: id}
	srv := &http.Server{
		Handler:           http.TimeoutHandler(mux, opts.Timeout, "timeout\n"),
		TLSConfig:         &tls.Config{GetCertificate: cert.get, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: opts.Timeout,
		ReadTimeout:       opts.Timeout,
		WriteTimeout:      opts.Timeout + time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		// A stranger's failed handshakes are not the agent's news.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(opts.Log, "northstar agent: federation: serving the bundle of %s and its evidence on https://%s (as %s)\n", td.Name(), ln.Addr(), id)
	err = srv.ServeTLS(netutil.LimitListener(ln, maxConns), "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type endpoint struct {
	opts EndpointOptions
	tpm  chan struct{} // one TPM conversation at a time
}

// evidence answers GET /evidence?nonce=HEX with evidence quoted over the
// nonce.
func (e *endpoint) evidence(w http.ResponseWriter, r *http.Request) {
	nonce, err := hex.DecodeString(r.URL.Query().Get("nonce"))
	if err == nil {
		err = attest.CheckNonce(nonce)
	}
	if err != nil {
		http.Error(w, "nonce: "+err.Error(), http.StatusBadRequest)
		return
	}
	e.withTPM(w, r, func(ctx context.Context) (*attest.Evidence, error) { return e.opts.Attester.Evidence(ctx, nonce) })
}

// answer answers POST /evidence with a challenge (attest.Challenge) with
// evidence quoted over its secret.
func (e *endpoint) answer(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxChallenge))
	if err != nil {
		http.Error(w, "the challenge: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	ch, err := attest.ParseChallenge(b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e.withTPM(w, r, func(ctx context.Context) (*attest.Evidence, error) { return e.opts.Attester.Answer(ctx, ch) })
}

func (e *endpoint) withTPM(w http.ResponseWriter, r *http.Request, fn func(context.Context) (*attest.Evidence, error)) {
	select {
	case e.tpm <- struct{}{}:
		defer func() { <-e.tpm }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the TPM is answering another verifier; retry", http.StatusServiceUnavailable)
		return
	}
	ev, err := fn(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ev)
}

// svidCert is the endpoint's TLS certificate: an X.509-SVID of the
// endpoint's ID from the agent's CA, renewed at half its life.
type svidCert struct {
	ca   CA
	id   spiffeid.ID
	mu   sync.Mutex
	cert *tls.Certificate
	renw time.Time
}

func (c *svidCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.cert != nil && now.Before(c.renw) {
		return c.cert, nil
	}
	svid, err := c.ca.IssueX509(c.id, now, endpointSVIDTTL)
	if err != nil {
		return nil, err
	}
	defer svid.Zero()
	key, err := x509.ParsePKCS8PrivateKey(svid.Key())
	if err != nil {
		return nil, err
	}
	chain, err := x509.ParseCertificates(svid.Cert)
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		cert.Certificate = append(cert.Certificate, x.Raw)
	}
	c.cert, c.renw = cert, svid.NotAfter.Add(-svid.Lifetime/2)
	return cert, nil
}
