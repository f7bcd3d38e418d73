// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// swtpm is a software TPM 2.0 on a unix socket, started by a test and
// stopped in its cleanup.
type swtpm struct {
	dir, sock string
	cmd       *exec.Cmd
}

// path is the [tpm] path of the config.
func (s *swtpm) path() string { return "unix:" + s.sock }

// newSWTPM starts swtpm with its state in a fresh directory, as owner when
// given (so rootless runtimes running as that account can use the socket).
func newSWTPM(t *testing.T, owner *account) *swtpm {
	t.Helper()
	requires(t, "swtpm")
	dir := filepath.Join(worldDir(t), "swtpm")
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := &swtpm{dir: dir, sock: filepath.Join(dir, "swtpm.sock")}
	s.start(t, owner)
	return s
}

func (s *swtpm) start(t *testing.T, owner *account) {
	t.Helper()
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+s.sock,
		"--ctrl", "type=unixio,path="+filepath.Join(s.dir, "swtpm.ctrl"),
		"--tpmstate", "dir="+filepath.Join(s.dir, "state"),
		"--flags", "not-need-init,startup-clear")
	if owner != nil {
		owner.chownR(t, s.dir)
		owner.apply(s.cmd)
	}
	logf, err := os.Create(filepath.Join(filepath.Dir(s.dir), "swtpm.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	cmd := s.cmd
	t.Cleanup(func() { s.stopCmd(cmd) })
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", s.sock); err == nil {
			c.Close()
			return
		}
		if i > 200 {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("swtpm socket %s never appeared:\n%s", s.sock, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *swtpm) stopCmd(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// stop ends swtpm now (the TPM becomes unreachable).
func (s *swtpm) stop() {
	s.stopCmd(s.cmd)
	_ = os.Remove(s.sock)
}

// extendPCR extends a sha256 PCR, changing the measured state the secret
// may be bound to.
func (s *swtpm) extendPCR(t *testing.T, pcr int) {
	t.Helper()
	tpm, err := linuxudstpm.Open(s.sock)
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	defer tpm.Close()
	digest := sha256.Sum256([]byte(fmt.Sprintf("northstar test measurement %d", time.Now().UnixNano())))
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:],
		}}},
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("PCRExtend %d: %v", pcr, err)
	}
}
