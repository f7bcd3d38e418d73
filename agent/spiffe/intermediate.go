// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Intermediate is an X.509 CA certificate signed by the trust domain's
// root, and its key, which signs X.509-SVIDs in the root's place: the root
// signs once per intermediate, not per SVID, so a root whose key stays in
// a TPM (package agent/tpmca) is off the path of every container start.
type Intermediate struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// issuer is what signs X.509-SVIDs now: the CA's own key under its
// certificate, or an intermediate. chain is what follows the leaf in an
// SVID (the intermediate's DER; nothing for the root itself).
type issuer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []byte
}

// ErrNoIntermediate: the CA's root is external and no intermediate was set yet.
var ErrNoIntermediate = errors.New("spiffe ca: no intermediate under the root yet")

// UseRoot makes root the trust domain's X.509 bundle in place of the
// certificate of the seed's key, which then signs nothing: X.509-SVIDs are
// signed by the intermediate SetIntermediate gives, and refused
// (ErrNoIntermediate) before. Call it before the CA serves anyone.
func (ca *CA) UseRoot(root *x509.Certificate) error {
	if !root.IsCA || root.CheckSignatureFrom(root) != nil {
		return errors.New("spiffe ca: the root is not a self-signed CA certificate")
	}
	ca.cert, ca.x509Key = root, nil
	ca.issuer = new(atomic.Pointer[issuer])
	return nil
}

// SetIntermediate makes in the signer of X.509-SVIDs from now on. It must
// be a CA certificate the root signed, valid now.
func (ca *CA) SetIntermediate(in Intermediate, now time.Time) error {
	if ca.issuer == nil {
		return errors.New("spiffe ca: an intermediate needs an external root (UseRoot)")
	}
	if !in.Cert.IsCA || in.Cert.CheckSignatureFrom(ca.cert) != nil {
		return fmt.Errorf("spiffe ca: the intermediate %q is not a CA certificate signed by the root", in.Cert.Subject)
	}
	if now.Before(in.Cert.NotBefore) || !now.Before(in.Cert.NotAfter) {
		return fmt.Errorf("spiffe ca: the intermediate is valid %s to %s, not now", in.Cert.NotBefore, in.Cert.NotAfter)
	}
	ca.issuer.Store(&issuer{cert: in.Cert, key: in.Key, chain: in.Cert.Raw})
	return nil
}

// currentIssuer is what signs an X.509-SVID issued now.
func (ca *CA) currentIssuer() (*issuer, error) {
	if ca.issuer == nil {
		return &issuer{cert: ca.cert, key: ca.x509Key}, nil
	}
	if in := ca.issuer.Load(); in != nil {
		return in, nil
	}
	return nil, ErrNoIntermediate
}
