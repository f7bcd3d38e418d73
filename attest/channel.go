// SPDX-License-Identifier: Apache-2.0

// Package attest is a host's attestation (DESIGN.md §17): its TPM's
// endorsement key (EK) and EK certificate, an attestation key (AK) made in
// that TPM, a quote over the PCRs with a verifier's nonce, the
// certification of the host's TPM-resident signing root by the AK, and the
// offline verification of all of it. The TPM work is go-attestation's;
// this package says what to ask, keeps the key blobs, and checks answers.
//
// It talks to the TPM through seal/tpmconn (one conversation at a time,
// under the agent's lock file) and creates its keys under the SRK package
// seal provisions. It imports nothing of the agent.
package attest

import (
	"errors"
	"io"

	"github.com/google/go-tpm/tpm2/transport"
)

// channel lends go-attestation a conversation tpmconn opened: a command
// written is sent at once, and the next read returns its whole response,
// which is how go-tpm's legacy tpmutil (one Write, one Read) drives a TPM.
// Closing it does not close the conversation: tpmconn does.
type channel struct {
	tpm transport.TPM
	rsp []byte
}

func (c *channel) Write(cmd []byte) (int, error) {
	rsp, err := c.tpm.Send(cmd)
	if err != nil {
		return 0, err
	}
	c.rsp = rsp
	return len(cmd), nil
}

func (c *channel) Read(p []byte) (int, error) {
	if c.rsp == nil {
		return 0, io.EOF
	}
	if len(p) < len(c.rsp) {
		return 0, io.ErrShortBuffer
	}
	n := copy(p, c.rsp)
	c.rsp = nil
	return n, nil
}

func (c *channel) Close() error { return nil }

// MeasurementLog implements go-attestation's CommandChannelTPM20. The
// firmware's event log is not read: swtpm has none, and what northstar
// attests is the PCRs and its own container log.
func (c *channel) MeasurementLog() ([]byte, error) {
	return nil, errors.New("attest: the firmware event log is not read")
}
