// SPDX-License-Identifier: Apache-2.0

package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/childerr"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

// ChildEnv is set in the environment of InChild's child: the child only
// unseals (a child that started an agent of its own would start a child
// of its own, and so on).
const ChildEnv = "NORTHSTAR_UNSEAL_CHILD"

// Unsealer returns the current secret of the store as a sealed memfd, and
// the id of the record it came from.
type Unsealer func(ctx context.Context) (*os.File, control.RecordID, error)

// InProcess unseals in this process. Fine for a short-lived one (the hook);
// a long-lived agent uses InChild.
func InProcess(st *store.Store) Unsealer {
	return func(ctx context.Context) (*os.File, control.RecordID, error) {
		sec, rec, err := st.Secret(ctx)
		if err != nil {
			return nil, control.RecordID{}, err
		}
		memfd, err := secretfs.NewSecretMemfd("northstar-agent", sec) // zeroes sec
		if err != nil {
			return nil, control.RecordID{}, fmt.Errorf("memfd: %w", err)
		}
		return memfd, control.IDOf(rec), nil
	}
}

// InChild unseals in a child process, argv, which must run UnsealTo on the
// socket it finds at fd 3, and takes the sealed memfd it sends.
//
// Why a child: unsealing leaves plaintext behind in the heap of whoever
// does it. Our own copies are zeroed, but go-tpm decrypts the response
// parameters into buffers of its own that are garbage, not zeroed, and the
// agent lives for a whole lifecycle (measured: 3 copies of the secret in
// the agent's heap). The child's heap dies with it; the agent only ever
// holds the sealed memfd.
func InChild(argv []string) Unsealer {
	return func(ctx context.Context) (*os.File, control.RecordID, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, control.RecordID{}, fmt.Errorf("socketpair: %w", err)
		}
		ours, theirs := os.NewFile(uintptr(fds[0]), "unseal"), os.NewFile(uintptr(fds[1]), "unseal-child")
		defer ours.Close()
		var stderr strings.Builder
		cmd := childCommand(ctx, argv, theirs, &stderr)
		err = cmd.Start()
		theirs.Close()
		if err != nil {
			return nil, control.RecordID{}, fmt.Errorf("start unseal child: %w", err)
		}
		fc, err := net.FileConn(ours)
		if err != nil {
			cmd.Wait()
			return nil, control.RecordID{}, err
		}
		defer fc.Close()
		memfd, id, rerr := control.ReceiveSecret(fc.(*net.UnixConn))
		if werr := cmd.Wait(); werr != nil {
			if memfd != nil {
				memfd.Close()
			}
			return nil, control.RecordID{}, childerr.From(stderr.String(), werr)
		}
		if rerr != nil {
			return nil, control.RecordID{}, fmt.Errorf("unseal child: %w", rerr)
		}
		return memfd, id, nil
	}
}

// UnsealTo is the child's side of InChild: it unseals st's secret and sends
// it, as a sealed memfd, over conn.
func UnsealTo(ctx context.Context, st *store.Store, conn *os.File) error {
	// The child holds the plaintext for a moment, in go-tpm's garbage:
	// no core dump of it, no ptrace by processes of its uid.
	if err := harden(); err != nil {
		return err
	}
	memfd, id, err := InProcess(st)(ctx)
	if err != nil {
		return err
	}
	defer memfd.Close()
	fc, err := net.FileConn(conn)
	if err != nil {
		return err
	}
	defer fc.Close()
	return control.SendSecret(fc.(*net.UnixConn), memfd, id)
}

// childCommand is the command of an unseal child: argv with fd3 as its fd 3,
// ChildEnv set (so it never serves, and never starts children of its
// own), and its stderr kept for childerr.From.
func childCommand(ctx context.Context, argv []string, fd3 *os.File, stderr *strings.Builder) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{fd3}
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stderr = stderr
	return cmd
}
