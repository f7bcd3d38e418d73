// SPDX-License-Identifier: Apache-2.0

// Package unseal is the hook's TPM path: the lifecycle secret unsealed
// from the store that the config describes, into a sealed memfd. It is
// the one part of the hook that links the sealers (go-tpm); package hook
// takes it as its Unsealer. northstar-hook links it; northstar-agent-hook,
// which the agent serves, does not, and runs `northstar-hook unseal` (Main)
// for the starts the agent does not serve.
package unseal

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/hook"
	"github.com/northstar-oci/northstar/remedy"
	"github.com/northstar-oci/northstar/secretfs"
)

var _ hook.Unsealer = Here

// Here unseals the secret the store holds now, in this process.
func Here(ctx context.Context, cfg *config.Config) (*os.File, error) {
	st, err := configured.Store(cfg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	sec, _, err := st.Secret(ctx)
	if err != nil {
		return nil, err
	}
	memfd, err := secretfs.NewSecretMemfd("northstar-secret", sec)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	return memfd, nil
}

// socketFD is the descriptor on which Main sends the memfd (the first of
// exec.Cmd's ExtraFiles).
const socketFD = 3

// Main is `northstar-hook unseal [--config PATH]`: Here, and the memfd
// sent on fd 3 (hook.ExecUnsealer's socket). Its error is one line with
// its remedy.
func Main(ctx context.Context, args []string) error {
	return remedy.Explain(serve(ctx, args))
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("northstar-hook "+hook.UnsealCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "config file")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return fmt.Errorf("%w: northstar-hook %s [--config PATH], run by northstar-agent-hook with fd 3 its socket", hook.ErrUsage, hook.UnsealCommand)
	}
	if _, err := unix.Getsockname(socketFD); err != nil {
		return fmt.Errorf("%w: fd 3 is not a socket (%v): this is run by northstar-agent-hook, not by hand", hook.ErrUsage, err)
	}
	cfg, err := config.Load(config.Discover(*configPath))
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	memfd, err := Here(ctx, cfg)
	if err != nil {
		return err
	}
	defer memfd.Close()
	if err := unix.Sendmsg(socketFD, []byte{0}, unix.UnixRights(int(memfd.Fd())), nil, 0); err != nil {
		return fmt.Errorf("send the memfd: %w", err)
	}
	return nil
}
