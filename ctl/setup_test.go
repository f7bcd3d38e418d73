// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitWithoutATPM: on a host without the TPM device the config names,
// init and setup fail with one line naming the ways on (a TPM, swtpm,
// sealer = "host" and what it gives up), not with the bare open error.
func TestInitWithoutATPM(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"tpm\"\n[tpm]\npath = %q\n",
		filepath.Join(dir, "state"), filepath.Join(dir, "tpmrm0"))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init"}, {"setup", "runc"}} {
		_, _, err := ctl(t, append(args, "--config", cfgPath)...)
		if err == nil {
			t.Fatalf("%s without a TPM succeeded", args[0])
		}
		msg := err.Error()
		for _, want := range []string{"no TPM at " + filepath.Join(dir, "tpmrm0"), "a TPM 2.0", "run swtpm and set [tpm] path", `sealer = "host"`, "a copy of the disk opens"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q lacks %q", args[0], msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("%s: not one line: %q", args[0], msg)
		}
	}
}

// TestSetupPrintsNextSteps: setup run before the agent is started (the
// README's order) exits 0 and names starting the agent as the next step,
// where doctor on its own reports the agent down as a failure ([api]
// enable: containers do not start without it).
func TestSetupPrintsNextSteps(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	sock := filepath.Join(dir, "agent", "agent.sock")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("state_dir = %q\nsealer = \"host\"\n[agent]\nsocket = %q\n[api]\nenable = true\n",
		filepath.Join(dir, "state"), sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := ctl(t, "setup", "runc", "--config", cfgPath)
	if err != nil {
		t.Fatalf("setup before the agent: %v\n%s", err, out)
	}
	for _, want := range []string{"initialized ", "next  agent at " + sock, "next steps (setup starts and restarts nothing):\n  1. start the agent: systemctl start northstar-agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("setup output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("setup printed a FAIL:\n%s", out)
	}
	if out, _, err := ctl(t, "doctor", "--config", cfgPath); err == nil || !strings.Contains(out, "FAIL  agent at "+sock) {
		t.Errorf("doctor with the agent down: %v\n%s", err, out)
	}
}

// TestSetupPodmanRefusesADirectoryPodmanDoesNotRead: with the real podman,
// an explicit --hooks-dir that podman does not read is refused, naming
// where it does read hooks, and nothing is written: containers would
// otherwise start without the secret while setup said it was done.
func TestSetupPodmanRefusesADirectoryPodmanDoesNotRead(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("podman missing (scripts/setup.sh installs it)")
		}
		t.Skip("podman not installed")
	}
	dirs, err := podmanHooksDirs("podman")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("podman's hooks directories: %v, %v", dirs, err)
	}
	cfgPath := newConfig(t)
	elsewhere := t.TempDir()
	_, _, err = ctl(t, "setup", "podman", "--config", cfgPath, "--hooks-dir", elsewhere)
	if err == nil || !strings.Contains(err.Error(), "podman reads hooks from "+strings.Join(dirs, ", ")+", not "+elsewhere) {
		t.Fatalf("setup podman --hooks-dir %s: %v", elsewhere, err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, hooksFile)); err == nil {
		t.Error("setup wrote the file anyway")
	}
}
