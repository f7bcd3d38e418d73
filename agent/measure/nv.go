// SPDX-License-Identifier: Apache-2.0

package measure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/northstar-oci/northstar/attest/containerlog"
)

// readPublic returns the index's public area and name, or nil when it is
// not defined.
func readPublic(tpm transport.TPM, index uint32) (*tpm2.TPMSNVPublic, *tpm2.TPM2BName, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tpm2.NV_ReadPublic %#x: %w", index, err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, nil, fmt.Errorf("tpm2.NV_ReadPublic %#x: %w", index, err)
	}
	return pub, &rsp.NVName, nil
}

// indexAuth is the authValue the index is defined and extended with,
// made from the agent's key: each byte with its low bit set, so that no
// byte is zero. go-tpm v0.9.8's HMAC session cuts an authValue at its
// first zero byte, not only its trailing ones (hmacKeyFromAuthValue does
// not stop at the first non-zero byte from the end): with a random key,
// one start in eight would have its HMAC refused (TPM_RC_BAD_AUTH). 224
// bits are left, against which an HMAC gives nothing to guess.
func indexAuth(key []byte) []byte {
	auth := make([]byte, len(key))
	for i, b := range key {
		auth[i] = b | 1
	}
	return auth
}

// define defines the index with the authValue made from key.
func define(tpm transport.TPM, index uint32, key []byte) error {
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		Auth:       tpm2.TPM2BAuth{Buffer: indexAuth(key)},
		PublicInfo: tpm2.New2B(containerlog.Public(index)),
	}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
		return fmt.Errorf("tpm2.NV_DefineSpace %#x: %w (the TPM's owner hierarchy has a password, and the log's index needs "+
			"the owner's empty authorization: clear the owner password or turn [measure] enable off)", index, err)
	}
	if err != nil {
		return fmt.Errorf("tpm2.NV_DefineSpace %#x: %w", index, err)
	}
	return nil
}

// read returns the index's value; a defined index never extended reads
// as zeros (what an extend starts from).
func read(tpm transport.TPM, index uint32, name *tpm2.TPM2BName) ([sha256.Size]byte, error) {
	var v [sha256.Size]byte
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: *name},
		Size:       sha256.Size,
	}.Execute(tpm)
	if errors.Is(err, tpm2.TPMRCNVUninitialized) {
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("tpm2.NV_Read %#x: %w", index, err)
	}
	if len(rsp.Data.Buffer) != sha256.Size {
		return v, fmt.Errorf("tpm2.NV_Read %#x: %d bytes, not a SHA-256", index, len(rsp.Data.Buffer))
	}
	copy(v[:], rsp.Data.Buffer)
	return v, nil
}

// Extend runs TPM2_NV_Extend of index with data, authorized by the
// authValue made from key (indexAuth) in an HMAC session: what crosses the TPM's bus is an HMAC keyed with the
// authValue over the command and both nonces, never the value itself (a
// probe on a discrete TPM's LPC or SPI lines would learn it from a
// password session, and could extend the index from then on). The
// session is unsalted: the authValue is 32 random bytes, so the HMAC
// gives nothing to guess. go-tpm v0.9.8 has no NV_Extend command, so the
// command is built here (TPM 2.0 Part 3, 31.10) around go-tpm's session,
// which computes the command's HMAC and checks the response's.
func Extend(tpm transport.TPM, index uint32, key, data []byte) error {
	_, name, err := readPublic(tpm, index)
	if err != nil {
		return err
	}
	if name == nil {
		return fmt.Errorf("tpm2.NV_Extend %#x: the index is not defined", index)
	}
	sess := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(indexAuth(key)))
	if err := sess.Init(tpm); err != nil {
		return fmt.Errorf("tpm2.NV_Extend %#x: start an HMAC session: %w", index, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = sess.CleanupFailure(tpm)
		}
	}()
	// authHandle and nvIndex are both the index (AUTHWRITE).
	names := []tpm2.TPM2BName{*name, *name}
	parms := tpm2.Marshal(tpm2.TPM2BMaxNVBuffer{Buffer: data})
	ac, err := sess.Authorize(tpm2.TPMCCNVExtend, parms, nil, names, 0)
	if err != nil {
		return fmt.Errorf("tpm2.NV_Extend %#x: authorize: %w", index, err)
	}
	authArea := tpm2.Marshal(*ac)
	var cmd bytes.Buffer
	be := func(v any) { _ = binary.Write(&cmd, binary.BigEndian, v) }
	be(uint16(tpm2.TPMSTSessions))
	be(uint32(0)) // size, below
	be(uint32(tpm2.TPMCCNVExtend))
	be(index) // authHandle
	be(index) // nvIndex
	be(uint32(len(authArea)))
	cmd.Write(authArea)
	cmd.Write(parms)
	b := cmd.Bytes()
	binary.BigEndian.PutUint32(b[2:6], uint32(len(b)))
	rsp, err := tpm.Send(b)
	if err != nil {
		return fmt.Errorf("tpm2.NV_Extend %#x: %w", index, err)
	}
	if len(rsp) < 10 {
		return fmt.Errorf("tpm2.NV_Extend %#x: a response of %d bytes", index, len(rsp))
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		if errors.Is(rc, tpm2.TPMRCBadAuth) {
			return fmt.Errorf("tpm2.NV_Extend %#x: %w: the index does not take this agent's key (another agent, or a build before its authValue had no zero byte, defined it); "+
				"move the container log aside and undefine the index (tpm2_nvundefine -C o %#x) to begin a new log", index, rc, index)
		}
		return fmt.Errorf("tpm2.NV_Extend %#x: %w", index, rc)
	}
	// Success with sessions: parameterSize (0: NV_Extend returns no
	// parameters), then the session's response, whose HMAC go-tpm checks.
	if len(rsp) < 14 || binary.BigEndian.Uint32(rsp[10:14]) != 0 {
		return fmt.Errorf("tpm2.NV_Extend %#x: a malformed response", index)
	}
	ar, err := tpm2.Unmarshal[tpm2.TPMSAuthResponse](rsp[14:])
	if err != nil {
		return fmt.Errorf("tpm2.NV_Extend %#x: the session's response: %w", index, err)
	}
	if err := sess.Validate(tpm2.TPMRCSuccess, tpm2.TPMCCNVExtend, nil, names, 0, ar); err != nil {
		return fmt.Errorf("tpm2.NV_Extend %#x: the TPM's response does not verify: %w", index, err)
	}
	ok = true // a one-use session: the TPM flushed it
	return nil
}
