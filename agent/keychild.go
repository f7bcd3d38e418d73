// SPDX-License-Identifier: Apache-2.0

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/northstar-oci/northstar/internal/childerr"
	"github.com/northstar-oci/northstar/store"
)

// KeyLoader fills dst with the store's key name (len(dst) bytes), unsealing
// it, or making and sealing it the first time.
type KeyLoader func(ctx context.Context, name string, dst []byte) error

// KeyInChild loads keys the way InChild unseals the secret, and for the
// same reason: go-tpm leaves the plaintext in garbage buffers of whoever
// unseals, and the agent lives for the whole lifecycle. argv plus
// "--unseal-key NAME --key-size N" must run KeyTo on the pipe at fd 3. The
// key is read from the pipe straight into dst (the registry passes its
// locked key page), so no copy of it reaches the agent's heap.
func KeyInChild(argv []string) KeyLoader {
	return func(ctx context.Context, name string, dst []byte) error {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("pipe: %w", err)
		}
		defer r.Close()
		var stderr strings.Builder
		args := append(append([]string(nil), argv...), "--unseal-key", name, "--key-size", strconv.Itoa(len(dst)))
		cmd := childCommand(ctx, args, w, &stderr)
		err = cmd.Start()
		w.Close()
		if err != nil {
			return fmt.Errorf("start key child: %w", err)
		}
		_, rerr := io.ReadFull(r, dst)
		if rerr == nil {
			// Exactly len(dst) bytes: anything more is a child of another
			// version, not a key.
			var one [1]byte
			if n, _ := r.Read(one[:]); n != 0 {
				rerr = errors.New("key child sent more than the key")
			}
		}
		if werr := cmd.Wait(); werr != nil {
			clear(dst)
			return childerr.From(stderr.String(), werr)
		}
		if rerr != nil {
			clear(dst)
			return fmt.Errorf("key child: %w", rerr)
		}
		return nil
	}
}

// KeyTo is the child's side of KeyInChild: it loads key name of size bytes
// from st and writes it to w.
func KeyTo(ctx context.Context, st *store.Store, name string, size int, w *os.File) error {
	if size <= 0 || size > 64 {
		return fmt.Errorf("key size %d out of range", size)
	}
	if err := harden(); err != nil { // as UnsealTo
		return err
	}
	k, err := st.Key(ctx, name, size)
	if err != nil {
		return err
	}
	defer clear(k)
	if _, err := w.Write(k); err != nil {
		return fmt.Errorf("send key: %w", err)
	}
	return w.Close()
}
