// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	goattest "github.com/google/go-attestation/attest"
)

var (
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
)

// VerifyEKCertificate parses an EK certificate and verifies it chains to
// one of roots (through intermediates), at now.
//
// An EK certificate's subject is empty and its subjectAltName, critical,
// holds the TPM's manufacturer, model and version as a directoryName (TCG
// EK Credential Profile §3.2.9). Go's x509 leaves that extension unhandled
// and refuses the certificate for it; the attributes are checked here,
// then the extension is marked handled before the chain is verified.
func VerifyEKCertificate(der []byte, roots, intermediates *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	cert, err := goattest.ParseEKCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("the EK certificate does not parse: %w", err)
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		if err := checkTPMAttributes(ext.Value); err != nil {
			return nil, fmt.Errorf("the EK certificate's subjectAltName: %w", err)
		}
		cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions,
			func(id asn1.ObjectIdentifier) bool { return id.Equal(oidSubjectAltName) })
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		// EK certificates carry the TCG's EK EKU (2.23.133.8.1), which Go
		// does not know.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("the EK certificate (issuer %q) is not issued by the EK CA: %w", cert.Issuer, err)
	}
	return cert, nil
}

// checkTPMAttributes checks a subjectAltName names a TPM: a directoryName
// with the manufacturer, model and version attributes.
func checkTPMAttributes(san []byte) error {
	var names []asn1.RawValue
	if rest, err := asn1.Unmarshal(san, &names); err != nil || len(rest) > 0 {
		return errors.New("not a GeneralNames sequence")
	}
	for _, n := range names {
		if n.Class != asn1.ClassContextSpecific || n.Tag != 4 { // directoryName [4] EXPLICIT Name
			continue
		}
		var rdns pkix.RDNSequence
		if rest, err := asn1.Unmarshal(n.Bytes, &rdns); err != nil || len(rest) > 0 {
			return errors.New("a directoryName that is not a Name")
		}
		seen := map[string]bool{}
		for _, rdn := range rdns {
			for _, atv := range rdn {
				seen[atv.Type.String()] = true
			}
		}
		for _, oid := range []asn1.ObjectIdentifier{oidTPMManufacturer, oidTPMModel, oidTPMVersion} {
			if !seen[oid.String()] {
				return fmt.Errorf("the TPM attributes lack %s", oid)
			}
		}
		return nil
	}
	return errors.New("no directoryName with the TPM's manufacturer, model and version")
}

// ParseEKCertificate parses an EK certificate as go-attestation does
// (tolerating the encodings some TPM makers ship), without verifying it.
func ParseEKCertificate(der []byte) (*x509.Certificate, error) {
	return goattest.ParseEKCertificate(der)
}
