// SPDX-License-Identifier: Apache-2.0

// Package tpmca keeps the agent's SPIFFE CA under a root whose key never
// leaves the TPM (DESIGN.md §17): the root (package attest: an ECC P-256
// key with fixedTPM, fixedParent and sensitiveDataOrigin, certified by the
// host's attestation key) signs a short-lived intermediate, whose key is
// made here and held in the agent's memory; the intermediate signs every
// X.509-SVID. The TPM signs once per intermediate, ahead of need, so no
// container start waits for it (a discrete TPM takes 20-200 ms a command),
// and a dump of the agent's memory yields a key that expires with its
// intermediate, not the root.
package tpmca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"

	"fmt"
	"io"
	"math/big"
	"net/url"
	"time"

	"github.com/northstar-oci/northstar/agent/spiffe"
)

// Root is the TPM-resident root: *attest.Attester.
type Root interface {
	// RootCertificate is the root's certificate (made once, kept).
	RootCertificate(ctx context.Context) (*x509.Certificate, error)
	// RootSigner runs fn with a signer whose key is the root's, in the TPM.
	RootSigner(ctx context.Context, fn func(cert *x509.Certificate, s crypto.Signer) error) error
}

// Options configure Start.
type Options struct {
	Root Root
	CA   *spiffe.CA
	// TTL is an intermediate's lifetime ([spiffe] ca_ttl); a new one is
	// made at half of it.
	TTL time.Duration
	// Log gets a line for each intermediate made and each failure.
	Log io.Writer

	now  func() time.Time // tests
	poll time.Duration    // tests: how often keep looks at the clock
}

// MinTTL bounds Options.TTL from below: an intermediate must outlive a
// few renewal attempts.
const MinTTL = time.Minute

// Start makes opts.Root the CA's bundle, makes the first intermediate
// (one conversation with the TPM), and keeps a fresh one until ctx ends,
// in a goroutine. done is closed when that goroutine has returned.
func Start(ctx context.Context, opts Options) (done <-chan struct{}, err error) {
	if opts.TTL < MinTTL {
		return nil, fmt.Errorf("tpm ca: an intermediate lifetime of %s is below %s", opts.TTL, MinTTL)
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.poll == 0 {
		opts.poll = time.Minute
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	root, err := opts.Root.RootCertificate(ctx)
	if err != nil {
		return nil, fmt.Errorf("tpm ca: %w", err)
	}
	if err := opts.CA.UseRoot(root); err != nil {
		return nil, fmt.Errorf("tpm ca: %w", err)
	}
	in, err := renew(ctx, opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "northstar agent: SPIFFE root %q in the TPM; intermediate valid until %s\n",
		root.Subject.CommonName, in.NotAfter.UTC().Format(time.RFC3339))
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		keep(ctx, opts, in)
	}()
	return ch, nil
}

// keep renews the intermediate at half its life; a failure is retried
// with backoff (1 s doubling to a minute) while the current one lasts.
func keep(ctx context.Context, opts Options, cur *x509.Certificate) {
	backoff := time.Second
	next := cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) / 2)
	for {
		// Look at the wall clock at least every poll: a monotonic timer
		// alone would oversleep a host's suspend.
		t := time.NewTimer(min(max(0, next.Sub(opts.now())), opts.poll))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if opts.now().Before(next) {
			continue
		}
		in, err := renew(ctx, opts)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(opts.Log, "northstar agent: %v; the current intermediate expires at %s; retrying in %s\n",
				err, cur.NotAfter.UTC().Format(time.RFC3339), backoff)
			next = opts.now().Add(backoff)
			backoff = min(2*backoff, time.Minute)
			continue
		}
		cur, backoff = in, time.Second
		next = cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) / 2)
	}
}

// renew makes a new intermediate key, has the TPM root sign its
// certificate, and hands both to the CA.
func renew(ctx context.Context, opts Options) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tpm ca: intermediate key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("tpm ca: %w", err)
	}
	sum := sha256.Sum256(spki)
	serial := new(big.Int).SetBytes(sum[:16])
	serial.SetBit(serial, 127, 1)
	now := opts.now().UTC().Truncate(time.Second)
	td := opts.CA.TrustDomain()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"northstar"}, CommonName: "northstar SPIFFE intermediate " + hex.EncodeToString(sum[:8])},
		NotBefore:             now,
		NotAfter:              now.Add(opts.TTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs leaves only
		KeyUsage:              x509.KeyUsageCertSign,
		SubjectKeyId:          sum[:20],
		URIs:                  []*url.URL{td.ID().URL()},
	}
	var cert *x509.Certificate
	err = opts.Root.RootSigner(ctx, func(root *x509.Certificate, s crypto.Signer) error {
		// CreateCertificate checks the signature it got against root's key.
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, s)
		if err != nil {
			return err
		}
		cert, err = x509.ParseCertificate(der)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm ca: the TPM root did not sign a new intermediate: %w", err)
	}
	if err := opts.CA.SetIntermediate(spiffe.Intermediate{Cert: cert, Key: key}, opts.now()); err != nil {
		return nil, fmt.Errorf("tpm ca: %w", err)
	}
	return cert, nil
}
