// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
)

// tpmSAN is a subjectAltName as TPM makers write it: a directoryName of
// the TPM's manufacturer, model and version (TCG EK Credential Profile).
func tpmSAN(t *testing.T, oids ...asn1.ObjectIdentifier) []byte {
	t.Helper()
	var rdns pkix.RDNSequence
	for _, oid := range oids {
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: "x"}})
	}
	name, err := asn1.Marshal(rdns)
	if err != nil {
		t.Fatal(err)
	}
	dn, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name})
	if err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{FullBytes: dn}})
	if err != nil {
		t.Fatal(err)
	}
	return san
}

func TestCheckTPMAttributes(t *testing.T) {
	if err := checkTPMAttributes(tpmSAN(t, oidTPMManufacturer, oidTPMModel, oidTPMVersion)); err != nil {
		t.Errorf("a TPM's SAN refused: %v", err)
	}
	if err := checkTPMAttributes(tpmSAN(t, oidTPMManufacturer, oidTPMVersion)); err == nil || !strings.Contains(err.Error(), "lack 2.23.133.2.2") {
		t.Errorf("a SAN without the model: %v", err)
	}
	if err := checkTPMAttributes([]byte{0x30, 0x03, 0x82, 0x01, 'x'}); err == nil {
		t.Error("a SAN with a dNSName only was taken for a TPM's")
	}
	if err := checkTPMAttributes([]byte("junk")); err == nil {
		t.Error("junk was taken for a SAN")
	}
}

func TestParseEvidence(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"version": 2}`, `{"version": 1, "nonce": "zz"}`, `{"version": 1, "quote": {"attest": 5}}`,
		`{"version": 1, "x": "` + strings.Repeat("a", MaxEvidence) + `"}`} {
		if _, err := ParseEvidence([]byte(in)); !errors.Is(err, ErrParse) {
			t.Errorf("ParseEvidence(%.40q) = %v, want ErrParse", in, err)
		}
	}
	ev, err := ParseEvidence([]byte(`{"version": 1, "nonce": "00ff", "pcrs": [{"index": 7, "sha256": "ab"}]}`))
	if err != nil || string(ev.Nonce) != "\x00\xff" || ev.PCRs[0].Index != 7 || string(ev.PCRs[0].SHA256) != "\xab" {
		t.Errorf("ParseEvidence = %+v, %v", ev, err)
	}
	// Evidence without an EK is refused as the wrong EK, not trusted.
	if _, err := Verify(ev, Policy{Nonce: ev.Nonce}); !errors.Is(err, ErrWrongEK) {
		t.Errorf("Verify of evidence without an EK = %v, want ErrWrongEK", err)
	}
}

func TestCheckNonce(t *testing.T) {
	for n, ok := range map[int]bool{0: false, 7: false, 8: true, 32: true, 33: false} {
		if err := CheckNonce(make([]byte, n)); (err == nil) != ok {
			t.Errorf("CheckNonce(%d bytes) = %v", n, err)
		}
	}
}

// FuzzVerify: whatever evidence a peer sends, parsing and verifying it
// refuses it with an error, never a panic.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"version": 1, "nonce": "00ff", "pcrs": [{"index": 7, "sha256": "ab"}]}`))
	f.Add([]byte(`{"version": 1, "ek_certificate": "MAA=", "ak": {"public": "AAE="}, "quote": {"attest": "/1RDRw=="}, "root": {}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvidence(b)
		if err != nil {
			return
		}
		if _, err := Verify(ev, Policy{Nonce: []byte("0123456789abcdef")}); err == nil {
			t.Fatal("evidence without a trusted EK verified")
		}
		if ev.Root != nil {
			_, _, _ = VerifyRoot(ev.Root, ev.AK.Public)
		}
	})
}
