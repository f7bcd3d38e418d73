// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/seal/tpmseal"
)

// containers certifies the container log's NV index with the AK over
// nonce and returns it with the log up to the batch the index holds.
//
// go-attestation v0.6.4 keeps the AK's handle to itself, so the AK is
// loaded a second time here, with go-tpm, from the blob go-attestation
// keeps (its TPMT_PUBLIC and TPM2B_PRIVATE), under the same SRK.
func (a *Attester) containers(t transport.TPM, nonce []byte) (*Containers, error) {
	idx := tpm2.TPMHandle(a.opts.Containers.Index)
	pubRsp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("attest: NV index %#x of the container log is not defined (is the agent running with [measure] on?)", uint32(idx))
	}
	if err != nil {
		return nil, fmt.Errorf("attest: tpm2.NV_ReadPublic %#x: %w", uint32(idx), err)
	}
	ak, err := a.loadAKHandle(t)
	if err != nil {
		return nil, err
	}
	defer tpm2.FlushContext{FlushHandle: ak.Handle}.Execute(t) //nolint:errcheck // best effort, as every flush in a defer
	rsp, err := tpm2.NVCertify{
		SignHandle:     tpm2.AuthHandle{Handle: ak.Handle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
		AuthHandle:     tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:        tpm2.NamedHandle{Handle: idx, Name: pubRsp.NVName},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Size:           sha256.Size,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("attest: tpm2.NV_Certify %#x: %w", uint32(idx), err)
	}
	att, err := rsp.CertifyInfo.Contents()
	if err != nil {
		return nil, fmt.Errorf("attest: tpm2.NV_Certify: %w", err)
	}
	info, err := att.Attested.NV()
	if err != nil || len(info.NVContents.Buffer) != sha256.Size {
		return nil, fmt.Errorf("attest: tpm2.NV_Certify: no SHA-256 contents: %v", err)
	}
	var value [sha256.Size]byte
	copy(value[:], info.NVContents.Buffer)
	// The log is read after the certification: the agent writes a batch
	// before it extends it, so the file holds every batch the index does.
	b, err := os.ReadFile(a.opts.Containers.Path)
	if err != nil {
		return nil, fmt.Errorf("attest: the container log: %w", err)
	}
	recs, err := containerlog.Parse(b)
	if err != nil && !errors.Is(err, containerlog.ErrTruncated) { // a record being appended
		return nil, fmt.Errorf("attest: the container log %s: %w", a.opts.Containers.Path, err)
	}
	n, err := containerlog.Prefix(recs, uint32(idx), value)
	if err != nil {
		return nil, fmt.Errorf("attest: the container log %s: %w (NV index %#x holds %s)", a.opts.Containers.Path, err, uint32(idx), hex.EncodeToString(value[:8]))
	}
	start, from := containerlog.Tail(recs, n, containerLogBudget)
	c := &Containers{
		Log:           containerlog.Encode(recs[start:n]),
		NVPublic:      pubRsp.NVPublic.Bytes(),
		Certification: Quote{Attest: rsp.CertifyInfo.Bytes(), Signature: tpm2.Marshal(rsp.Signature)},
	}
	if start > 0 {
		c.From = from[:]
	}
	return c, nil
}

// containerLogBudget is MaxContainerLog (tests lower it).
var containerLogBudget = MaxContainerLog

// loadAKHandle loads the AK go-attestation made from its blob.
func (a *Attester) loadAKHandle(t transport.TPM) (*tpm2.NamedHandle, error) {
	path := filepath.Join(a.opts.Dir, akFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	// go-attestation's serialized key (storage.go).
	var blob struct {
		Public []byte
		Blob   []byte `json:"KeyBlob"`
	}
	if err := json.Unmarshal(b, &blob); err != nil || len(blob.Public) == 0 || len(blob.Blob) == 0 {
		return nil, fmt.Errorf("attest: %s is not an AK blob go-attestation wrote: %v", path, err)
	}
	srkName, err := tpmseal.EnsureSRK(t)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(parent.Handle), Name: tpm2.TPM2BName{Buffer: srkName}, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    tpm2.TPM2BPrivate{Buffer: blob.Blob},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](blob.Public),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("attest: tpm2.Load (the AK): %w", err)
	}
	return &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, nil
}
