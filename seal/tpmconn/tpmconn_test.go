// SPDX-License-Identifier: Apache-2.0

package tpmconn

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"
)

func TestOpenErrorSaysWhatToCheck(t *testing.T) {
	perm := openError("/dev/tpmrm0", &os.PathError{Op: "open", Path: "/dev/tpmrm0", Err: unix.EACCES})
	if !errors.Is(perm, ErrUnreachable) || !errors.Is(perm, os.ErrPermission) || !strings.Contains(perm.Error(), "permission denied; run as root") {
		t.Errorf("permission error = %v", perm)
	}
	busy := openError("unix:/run/swtpm/sock", syscall.EAGAIN)
	if !errors.Is(busy, ErrUnreachable) || !strings.Contains(busy.Error(), "swtpm is busy") {
		t.Errorf("busy error = %v", busy)
	}
	if strings.Contains(perm.Error(), ErrUnreachable.Error()) {
		t.Errorf("the sentinel's text is repeated in %q", perm)
	}
}

func TestNotNow(t *testing.T) {
	rsp := func(rc uint32) []byte {
		return []byte{0x80, 0x01, 0, 0, 0, 10, byte(rc >> 24), byte(rc >> 16), byte(rc >> 8), byte(rc)}
	}
	for rc, want := range map[uint32]bool{0x922: true, 0x908: true, 0x90A: true, 0: false, 0x99D: false} {
		if got := notNow(rsp(rc)); got != want {
			t.Errorf("notNow(rc %#x) = %v, want %v", rc, got, want)
		}
	}
	if notNow([]byte{0x80, 0x01}) {
		t.Error("a short response counts as a retry")
	}
}

// TestStreamTPMBoundsResponses: a peer that announces a huge or too-small
// response is refused instead of being read into memory.
func TestStreamTPMBoundsResponses(t *testing.T) {
	for name, hdr := range map[string][]byte{
		"huge":      {0x80, 0x01, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0},
		"too small": {0x80, 0x01, 0, 0, 0, 4, 0, 0, 0, 0},
	} {
		client, server := net.Pipe()
		go func() {
			buf := make([]byte, 64)
			server.Read(buf)
			server.Write(hdr)
		}()
		s := newStreamTPM(context.Background(), client)
		if _, err := s.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b}); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%s: Send = %v, want a size error", name, err)
		}
		s.Close()
		server.Close()
	}
}

// TestConverseDeadline: a TPM that accepts and never answers does not hold
// the caller past its context's deadline.
func TestConverseDeadline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "tpm.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, read nothing, answer nothing
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Converse(ctx, Options{Path: "unix:" + sock}, func(tpm transport.TPM) error {
		_, err := tpm.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b})
		return err
	})
	if err == nil {
		t.Fatal("a TPM that never answers answered")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Converse returned after %v, long past the 100ms deadline", d)
	}
}
