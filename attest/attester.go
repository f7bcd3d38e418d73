// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	goattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/northstar-oci/northstar/seal/tpmconn"
	"github.com/northstar-oci/northstar/seal/tpmseal"
)

// Files in Options.Dir. The blobs are the TPM's own wrapping of the keys
// under the SRK: only that TPM can load them, so they are not secret.
const (
	akFile       = "ak.blob"
	rootFile     = "root.blob"
	rootCertFile = "root.crt"
)

// ErrReprovisioned: the TPM no longer loads the keys kept for it (it was
// cleared or replaced, so its SRK changed). The host's root is gone with it.
var ErrReprovisioned = errors.New("the TPM cannot load the keys made in it (it was cleared or replaced)")

// Options says which TPM to attest and where its key blobs live.
type Options struct {
	TPM tpmconn.Options
	// Dir holds the AK and root key blobs and the root certificate
	// (created 0700 if missing).
	Dir string
	// TrustDomain, when set, is put in the root certificate as its URI
	// SAN (spiffe://TD), as a SPIFFE CA's certificate may carry.
	TrustDomain string
	// Timeout bounds one conversation with the TPM ([tpm] timeout; 0: none).
	Timeout time.Duration
	// Containers, when set, puts the measured-container log and the AK's
	// certification of its NV index in the evidence.
	Containers *ContainerLog
}

// ContainerLog names the agent's measured-container log and its NV index.
type ContainerLog struct {
	Path  string
	Index uint32
}

// Attester answers a verifier's nonce with Evidence.
type Attester struct{ opts Options }

// New returns an Attester. It does not touch the TPM.
func New(opts Options) (*Attester, error) {
	if opts.Dir == "" {
		return nil, errors.New("attest: no directory for the key blobs")
	}
	return &Attester{opts: opts}, nil
}

// Evidence quotes the PCRs with nonce, and returns it with the EK
// certificate, the AK and the certified root, creating the AK and the root
// in the TPM the first time.
func (a *Attester) Evidence(ctx context.Context, nonce []byte) (*Evidence, error) {
	if err := CheckNonce(nonce); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	var ev *Evidence
	err := a.converse(ctx, func(t transport.TPM, tpm *goattest.TPM, ak *goattest.AK, root *goattest.Key) error {
		var err error
		ev, err = a.evidence(t, tpm, ak, root, nonce)
		return err
	})
	if err == nil {
		err = a.withContainers(ctx, ev)
	}
	return ev, err
}

// withContainers adds the container log and its certification to ev, in
// a conversation of its own: the TPM holds three loaded objects at the
// least (swtpm: three), and the AK is loaded again to certify.
func (a *Attester) withContainers(ctx context.Context, ev *Evidence) error {
	if a.opts.Containers == nil {
		return nil
	}
	if a.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.opts.Timeout)
		defer cancel()
	}
	return tpmconn.Converse(ctx, a.opts.TPM, func(t transport.TPM) error {
		var err error
		ev.Containers, err = a.containers(t, ev.Nonce)
		return err
	})
}

// Answer activates a verifier's challenge (proving the AK is in the TPM of
// the challenged EK: only that TPM can decrypt it) and quotes with the
// secret it holds as the nonce.
func (a *Attester) Answer(ctx context.Context, ch *Challenge) (*Evidence, error) {
	var ev *Evidence
	err := a.converse(ctx, func(t transport.TPM, tpm *goattest.TPM, ak *goattest.AK, root *goattest.Key) error {
		pub := ak.AttestationParameters().Public
		if !bytes.Equal(pub, ch.AK) {
			return fmt.Errorf("attest: the challenge is for another AK (%s), this host's is %s", fingerprint(ch.AK), fingerprint(pub))
		}
		nonce, err := ak.ActivateCredential(tpm, goattest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret})
		if err != nil {
			return fmt.Errorf("attest: activate the challenge: %w (was it made for this host's EK?)", err)
		}
		ev, err = a.evidence(t, tpm, ak, root, nonce)
		return err
	})
	if err == nil {
		err = a.withContainers(ctx, ev)
	}
	return ev, err
}

// RootCertificate returns the root's certificate, creating the AK and the
// root first if they do not exist.
func (a *Attester) RootCertificate(ctx context.Context) (*x509.Certificate, error) {
	var cert *x509.Certificate
	err := a.converse(ctx, func(_ transport.TPM, _ *goattest.TPM, _ *goattest.AK, _ *goattest.Key) error {
		var err error
		cert, err = a.readRootCert()
		return err
	})
	return cert, err
}

// RootCertification returns the root and the AK's TPMT_PUBLIC that
// certified it, without a quote (no EK needed).
func (a *Attester) RootCertification(ctx context.Context) (*Root, []byte, error) {
	var (
		r  *Root
		ak []byte
	)
	err := a.converse(ctx, func(_ transport.TPM, _ *goattest.TPM, k *goattest.AK, root *goattest.Key) error {
		cert, err := a.readRootCert()
		if err != nil {
			return err
		}
		r, ak = rootOf(cert, root), k.AttestationParameters().Public
		return nil
	})
	return r, ak, err
}

// RootSigner runs fn with a crypto.Signer whose key is the root: each Sign
// is a TPM2_Sign in the TPM, within this one conversation.
func (a *Attester) RootSigner(ctx context.Context, fn func(cert *x509.Certificate, s crypto.Signer) error) error {
	return a.converse(ctx, func(_ transport.TPM, _ *goattest.TPM, _ *goattest.AK, root *goattest.Key) error {
		cert, err := a.readRootCert()
		if err != nil {
			return err
		}
		priv, err := root.Private(root.Public())
		if err != nil {
			return fmt.Errorf("attest: root signer: %w", err)
		}
		return fn(cert, priv.(crypto.Signer))
	})
}

func (a *Attester) evidence(t transport.TPM, tpm *goattest.TPM, ak *goattest.AK, root *goattest.Key, nonce []byte) (*Evidence, error) {
	eks, err := tpm.EKs()
	if err != nil {
		return nil, fmt.Errorf("attest: read the EK: %w", err)
	}
	if len(eks) == 0 || eks[0].Certificate == nil {
		return nil, errors.New("attest: the TPM has no EK certificate at NV 0x1c00002 (a swtpm needs swtpm_setup --create-ek-cert)")
	}
	// The PCRs are read, then quoted: an extend in between makes the
	// quote's digest disagree with the values, so try again.
	var (
		q    *goattest.Quote
		pcrs []goattest.PCR
	)
	for try := 0; ; try++ {
		if pcrs, err = tpm.PCRs(goattest.HashSHA256); err != nil {
			return nil, fmt.Errorf("attest: read the PCRs: %w", err)
		}
		if q, err = ak.Quote(tpm, nonce, goattest.HashSHA256); err != nil {
			return nil, fmt.Errorf("attest: quote: %w", err)
		}
		akPub, err := goattest.ParseAKPublic(ak.AttestationParameters().Public)
		if err != nil {
			return nil, fmt.Errorf("attest: AK public: %w", err)
		}
		if err = akPub.Verify(*q, pcrs, nonce); err == nil {
			break
		} else if try == 3 {
			return nil, fmt.Errorf("attest: the quote does not match the PCRs read before it: %w", err)
		}
	}
	cert, err := a.readRootCert()
	if err != nil {
		return nil, err
	}
	ap := ak.AttestationParameters()
	ev := &Evidence{
		Version:       Version,
		Nonce:         nonce,
		EKCertificate: eks[0].Certificate.Raw,
		AK:            Certified{ap.Public, ap.CreateData, ap.CreateAttestation, ap.CreateSignature},
		Quote:         Quote{Attest: q.Quote, Signature: q.Signature},
		Root:          rootOf(cert, root),
	}

	for _, p := range pcrs {
		ev.PCRs = append(ev.PCRs, PCR{Index: p.Index, SHA256: p.Digest})
	}
	return ev, nil
}

// rootOf is the evidence of the root: its certificate and its certification.
func rootOf(cert *x509.Certificate, root *goattest.Key) *Root {
	cp := root.CertificationParameters()
	return &Root{Certificate: cert.Raw, Certification: Certified{cp.Public, cp.CreateData, cp.CreateAttestation, cp.CreateSignature}}
}

// converse runs fn with the TPM, the AK and the root key loaded (made and
// kept in a.opts.Dir the first time), and unloads them afterwards.
func (a *Attester) converse(ctx context.Context, fn func(transport.TPM, *goattest.TPM, *goattest.AK, *goattest.Key) error) error {
	if err := os.MkdirAll(a.opts.Dir, 0o700); err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	if a.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.opts.Timeout)
		defer cancel()
	}
	return tpmconn.Converse(ctx, a.opts.TPM, func(t transport.TPM) error {
		// The AK and the root live under the SRK northstar seals under.
		if _, err := tpmseal.EnsureSRK(t); err != nil {
			return fmt.Errorf("attest: %w", err)
		}
		tpm, err := goattest.OpenTPM(&goattest.OpenConfig{CommandChannel: &channel{tpm: t}})
		if err != nil {
			return fmt.Errorf("attest: %w", err)
		}
		ak, made, err := a.loadAK(tpm)
		if err != nil {
			return err
		}
		defer ak.Close(tpm)
		root, err := a.loadRoot(tpm, ak, made)
		if err != nil {
			return err
		}
		defer root.Close()
		return fn(t, tpm, ak, root)
	})
}

// parent is the SRK seal provisions (go-attestation's own default is an
// RSA SRK at the same handle, which it would create if the handle were
// empty; tpmseal.EnsureSRK has filled it first).
var parent = &goattest.ParentKeyConfig{Algorithm: goattest.ECDSA, Handle: 0x81000001}

func (a *Attester) loadAK(tpm *goattest.TPM) (ak *goattest.AK, made bool, err error) {
	path := filepath.Join(a.opts.Dir, akFile)
	blob, err := os.ReadFile(path)
	switch {
	case err == nil:
		ak, err := tpm.LoadAKWithParent(blob, *parent)
		if err != nil {
			return nil, false, fmt.Errorf("attest: load the AK kept in %s: %w: %v; "+
				"this host's root went with it: remove %s to make a new AK and a new root, and give peers the new bundle",
				path, ErrReprovisioned, err, a.opts.Dir)
		}
		return ak, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("attest: %w", err)
	}
	if _, err := os.Stat(filepath.Join(a.opts.Dir, rootFile)); err == nil {
		return nil, false, fmt.Errorf("attest: %s has a root key but no AK to certify it; remove %s to make both anew (a new root)",
			a.opts.Dir, filepath.Join(a.opts.Dir, rootFile))
	}
	// ECC P-256: a discrete TPM makes an ECC key in well under a second,
	// an RSA-2048 one in up to tens of seconds.
	ak, err = tpm.NewAK(&goattest.AKConfig{Parent: parent, Algorithm: goattest.ECDSA})
	if err != nil {
		return nil, false, fmt.Errorf("attest: make an AK: %w", err)
	}
	blob, err = ak.Marshal()
	if err == nil {
		err = writeFile(path, blob)
	}
	if err != nil {
		ak.Close(tpm)
		return nil, false, fmt.Errorf("attest: keep the AK: %w", err)
	}
	return ak, true, nil
}

// loadRoot loads the root key, or makes it (a P-256 signing key: FixedTPM,
// FixedParent, SensitiveDataOrigin, certified by ak) with its self-signed
// certificate when there is none.
func (a *Attester) loadRoot(tpm *goattest.TPM, ak *goattest.AK, akMade bool) (*goattest.Key, error) {
	path := filepath.Join(a.opts.Dir, rootFile)
	blob, err := os.ReadFile(path)
	switch {
	case err == nil:
		root, err := tpm.LoadKey(blob)
		if err != nil {
			return nil, fmt.Errorf("attest: load the root key kept in %s: %w: %v; "+
				"remove %s to make a new AK and a new root, and give peers the new bundle", path, ErrReprovisioned, err, a.opts.Dir)
		}
		return root, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("attest: %w", err)
	}
	root, err := tpm.NewKey(ak, &goattest.KeyConfig{Algorithm: goattest.ECDSA, Size: 256, Parent: parent})
	if err != nil {
		return nil, fmt.Errorf("attest: make the root key: %w", err)
	}
	cert, err := a.rootCertificate(root)
	if err == nil {
		err = writeFile(filepath.Join(a.opts.Dir, rootCertFile), cert)
	}
	if err == nil {
		blob, err = root.Marshal()
	}
	if err == nil {
		err = writeFile(path, blob)
	}
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("attest: keep the root: %w", err)
	}
	return root, nil
}

// The root certificate's validity: the root lives as long as its key in
// the TPM, so it does not expire (RFC 5280 §4.1.2.5's 99991231235959Z).
var (
	rootNotBefore = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rootNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// rootCertificate makes the root's self-signed certificate (DER), signed in
// the TPM. It is made once and kept, so it is the same at every restart.
func (a *Attester) rootCertificate(root *goattest.Key) ([]byte, error) {
	pub, ok := root.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the root key is %T, not ECDSA", root.Public())
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki)
	serial := new(big.Int).SetBytes(sum[:16])
	serial.SetBit(serial, 127, 1)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"northstar"}, CommonName: "northstar TPM root " + hex.EncodeToString(sum[:8])},
		NotBefore:             rootNotBefore,
		NotAfter:              rootNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1, // it signs intermediates, which sign leaves
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          sum[:20],
	}
	if a.opts.TrustDomain != "" {
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: a.opts.TrustDomain}}
	}
	priv, err := root.Private(pub)
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificate(nil, tmpl, tmpl, pub, priv.(crypto.Signer))
}

func (a *Attester) readRootCert() (*x509.Certificate, error) {
	path := filepath.Join(a.opts.Dir, rootCertFile)
	der, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("attest: the root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("attest: the root certificate %s: %w", path, err)
	}
	return cert, nil
}

// writeFile writes b to path atomically, 0600.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// fingerprint names a public area or key by the first bytes of its SHA-256.
func fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}
