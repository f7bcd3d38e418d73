// SPDX-License-Identifier: Apache-2.0

package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/internal/binpath"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

// An Unsealer gives the secret the store holds now in a sealed memfd
// (secretfs.NewSecretMemfd), for the starts the agent does not serve.
// This package does not link the sealers (go-tpm and its crypto cost a
// process start about 2 ms on a small VM, on every start, whether used or
// not): northstar-hook passes package hook/unseal's, northstar-agent-hook
// ExecUnsealer's.
type Unsealer func(ctx context.Context, cfg *config.Config) (*os.File, error)

// records is the store in cfg's state directory for reading its record:
// the revocations and the agent's deliveries are checked against it
// without the sealer.
func records(cfg *config.Config) *store.Store {
	return store.ForReading(cfg.StateDir, cfg.Sealer)
}

// UnsealCommand is northstar-hook's first argument when another hook runs
// it as its unsealer: `northstar-hook unseal [--config PATH]`, fd 3 a
// socket on which it sends the memfd (package hook/unseal).
const UnsealCommand = "unseal"

// ExecUnsealer is the Unsealer of a hook that does not link the sealers:
// it runs name (northstar-hook, found next to this binary, else on PATH)
// as UnsealCommand and takes the memfd it sends. A failure is the other
// hook's one line, its remedy included.
func ExecUnsealer(name string) Unsealer {
	return func(ctx context.Context, cfg *config.Config) (*os.File, error) {
		bin, err := binpath.Find(name)
		if err != nil {
			return nil, err
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socketpair: %w", err)
		}
		ours, theirs := os.NewFile(uintptr(fds[0]), "unseal"), os.NewFile(uintptr(fds[1]), "unseal")
		defer ours.Close()
		args := []string{UnsealCommand}
		if cfg.Path != "" {
			args = append(args, "--config", cfg.Path)
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.ExtraFiles = []*os.File{theirs} // fd 3
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err = cmd.Run()
		theirs.Close()
		if err != nil {
			if line := lastLine(stderr.String(), name+": "); line != "" {
				return nil, errors.New(line)
			}
			return nil, fmt.Errorf("%s %s: %w", bin, UnsealCommand, err)
		}
		memfd, err := receiveFile(ours)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", bin, UnsealCommand, err)
		}
		if err := secretfs.CheckSealed(memfd); err != nil {
			memfd.Close()
			return nil, fmt.Errorf("%s %s: %w", bin, UnsealCommand, err)
		}
		return memfd, nil
	}
}

// lastLine is the last non-empty line of out without prefix.
func lastLine(out, prefix string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), prefix)
}

// receiveFile takes the one descriptor queued on sock (its sender has
// exited: nothing is waited for).
func receiveFile(sock *os.File) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, flags, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("receive the memfd: %w", err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return nil, errors.New("receive the memfd: more than one descriptor")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("receive the memfd: no descriptor")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errors.New("receive the memfd: not one descriptor")
	}
	return os.NewFile(uintptr(fds[0]), "memfd:northstar-secret"), nil
}
