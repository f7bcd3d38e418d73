// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
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

// newSWTPMWithEK starts a swtpm whose state swtpm_setup manufactured with
// an RSA EK and its certificate (NV 0x1c00002), issued by a swtpm-localca
// of the test's own (not the machine's /var/lib/swtpm-localca). It returns
// the TPM and a PEM file of that CA's certificates, the "manufacturer CA".
//
// A manufactured state served with --flags not-need-init,startup-clear
// answers all but GetCapability with TPM_RC_FAILURE (DESIGN.md §17), so it
// is served without them: CMD_INIT on the control channel, then
// TPM2_Startup(CLEAR) on the data channel, as firmware would.
func newSWTPMWithEK(t *testing.T) (*swtpm, string) {
	t.Helper()
	requires(t, "swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca")
	dir := filepath.Join(worldDir(t), "swtpm")
	ca := filepath.Join(dir, "localca")
	for _, d := range []string{filepath.Join(dir, "state"), ca} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	caConf := filepath.Join(dir, "swtpm-localca.conf")
	setupConf := filepath.Join(dir, "swtpm_setup.conf")
	writeFile(t, caConf, fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
		ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")))
	writeFile(t, setupConf, fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\n"+
		"create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n", caConf))
	mustRun(t, exec.Command("swtpm_setup", "--tpm2", "--tpmstate", filepath.Join(dir, "state"),
		"--config", setupConf, "--create-ek-cert", "--overwrite"))

	var pem []byte
	for _, f := range []string{"issuercert.pem", "swtpm-localca-rootca-cert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca, f))
		if err != nil {
			t.Fatalf("swtpm_localca made no %s: %v", f, err)
		}
		pem = append(pem, b...)
	}
	caFile := filepath.Join(dir, "ek-ca.pem")
	writeFile(t, caFile, string(pem))

	s := &swtpm{dir: dir, sock: filepath.Join(dir, "swtpm.sock")}
	s.serveManufactured(t)
	return s, caFile
}

// serveManufactured (re)starts swtpm on a state swtpm_setup made.
func (s *swtpm) serveManufactured(t *testing.T) {
	t.Helper()
	ctrl := filepath.Join(s.dir, "swtpm.ctrl")
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+s.sock,
		"--ctrl", "type=unixio,path="+ctrl,
		"--tpmstate", "dir="+filepath.Join(s.dir, "state"))
	var log bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &log, &log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	cmd := s.cmd
	t.Cleanup(func() { s.stopCmd(cmd) })
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", ctrl); err == nil {
			c.Close()
			break
		}
		if i > 500 {
			t.Fatalf("swtpm control socket %s never appeared:\n%s", ctrl, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustRun(t, exec.Command("swtpm_ioctl", "--unix", ctrl, "-i"))
	tpm, err := linuxudstpm.Open(s.sock)
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	defer tpm.Close()
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tpm); err != nil {
		t.Fatalf("TPM2_Startup: %v", err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
