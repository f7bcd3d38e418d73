// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
	"golang.org/x/sys/unix"
)

// RecordID names the stored record a memfd was unsealed from: its
// generation, for people, and the SHA-256 of its sealed blob, which no two
// secrets share. Matching on the generation alone would let an agent that
// holds an old generation 1 serve it again after the state was wiped and
// initialised (generations start over at 1 there).
type RecordID struct {
	Generation uint64
	BlobDigest [sha256.Size]byte
}

// IDOf returns the RecordID of rec.
func IDOf(rec *store.Record) RecordID {
	return RecordID{Generation: rec.Generation, BlobDigest: sha256.Sum256(rec.Blob)}
}

func (id RecordID) marshal() []byte {
	return append(binary.BigEndian.AppendUint64(nil, id.Generation), id.BlobDigest[:]...)
}

func unmarshalRecordID(b []byte) RecordID {
	id := RecordID{Generation: binary.BigEndian.Uint64(b)}
	copy(id.BlobDigest[:], b[8:])
	return id
}

// SendSecret writes one message: id with memfd attached. The agent's
// unseal child answers its parent with it too.
func SendSecret(c *net.UnixConn, memfd *os.File, id RecordID) error {
	_, _, err := c.WriteMsgUnix(id.marshal(), unix.UnixRights(int(memfd.Fd())), nil)
	return err
}

// Fetch asks the agent at socketPath for the secret and returns its sealed
// memfd and the id of its record. Anything unexpected (no agent, a peer that is not
// root or us, no fd or more than one, an unsealed memfd, content that is not
// a secret) is an error; the caller then unseals from the TPM instead.
func Fetch(ctx context.Context, socketPath string) (*os.File, RecordID, error) {
	c, err := dial(ctx, socketPath, FetchTimeout)
	if err != nil {
		return nil, RecordID{}, fmt.Errorf("agent: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{opSecret}); err != nil {
		return nil, RecordID{}, fmt.Errorf("write agent: %w", err)
	}
	return ReceiveSecret(c)
}

// ReceiveSecret reads one message (a RecordID and one memfd) from c and
// checks the memfd's seals and content.
func ReceiveSecret(c *net.UnixConn) (*os.File, RecordID, error) {
	// One spare byte and room for several fds, to detect (and refuse)
	// anything but exactly one record id and one fd.
	var msg [msgSize + 1]byte
	oob := make([]byte, unix.CmsgSpace(8*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(msg[:], oob)
	if err != nil {
		return nil, RecordID{}, fmt.Errorf("read agent: %w", err)
	}
	// Go's ReadMsgUnix passes MSG_CMSG_CLOEXEC on Linux, so received fds
	// never leak into anything the hook executes.
	fds, perr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	switch {
	case perr != nil:
		closeAll()
		return nil, RecordID{}, perr
	case flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0:
		closeAll()
		return nil, RecordID{}, errors.New("agent message truncated")
	case n != msgSize:
		closeAll()
		return nil, RecordID{}, fmt.Errorf("agent message is %d bytes, want %d", n, msgSize)
	case len(fds) != 1:
		closeAll()
		return nil, RecordID{}, fmt.Errorf("agent sent %d fds, want 1", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "memfd:northstar-agent")
	if err := checkSecretMemfd(f); err != nil {
		f.Close()
		return nil, RecordID{}, err
	}
	return f, unmarshalRecordID(msg[:msgSize]), nil
}

// parseRights returns every fd in the control messages, so that the caller
// can close them all when it refuses the message.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse agent control message: %w", err)
	}
	var fds []int
	var bad error
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = fmt.Errorf("agent sent an unexpected control message (level %d type %d)", msgs[i].Header.Level, msgs[i].Header.Type)
			continue
		}
		fds = append(fds, got...)
	}
	return fds, bad
}

// checkSecretMemfd verifies the seals and that the content is a secret in
// its in-container form (64 lowercase hex). Plaintext copies are zeroed.
func checkSecretMemfd(f *os.File) error {
	text, err := secretfs.ReadMemfd(f)
	if err != nil {
		return fmt.Errorf("agent memfd: %w", err)
	}
	defer secretfs.Zero(text[:cap(text)])
	sec, err := secretfs.FromHex(text)
	if err != nil {
		return fmt.Errorf("agent memfd: %w", err)
	}
	sec.Zero()
	return nil
}

// FetchCurrent is the one call the hook makes: the agent's memfd, only if
// it carries the secret st holds now (the same sealed blob). Any
// doubt (no agent, a refused or stale one) is an error, and the caller
// unseals from the TPM itself: the agent can never make a start fail, and a
// stale agent cannot serve a rotated-out secret.
func FetchCurrent(ctx context.Context, socketPath string, st *store.Store) (*os.File, error) {
	memfd, id, err := Fetch(ctx, socketPath)
	if err != nil {
		return nil, err
	}
	if err := CheckCurrent(st, id); err != nil {
		memfd.Close()
		return nil, err
	}
	return memfd, nil
}

// CheckCurrent checks that id names the secret st holds now, sealed by
// st's sealer.
func CheckCurrent(st *store.Store, id RecordID) error {
	rec, err := st.Current()
	if err != nil {
		return err
	}
	if want := IDOf(rec); want != id || rec.Sealer != st.Sealer().Name() {
		return fmt.Errorf("agent serves generation %d (blob %x…), the store holds %d (blob %x…)",
			id.Generation, id.BlobDigest[:4], want.Generation, want.BlobDigest[:4])
	}
	return nil
}
