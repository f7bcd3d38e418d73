// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/internal/testenv"
)

// TestTPMLifecycle: init, a container reads the secret through the hook,
// rotate changes it, status never shows it, the state directory holds
// neither its hex nor its bytes.
func TestTPMLifecycle(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e := newTPMEnv(t, tpm, "[]", nil)
	first := e.secretHex(t)

	r := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	if r.err != nil || r.stdout != first {
		t.Fatalf("container did not read the TPM-sealed secret:\n%s", r)
	}
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	second := e.secretHex(t)
	if second == first {
		t.Fatal("rotate kept the secret")
	}
	r = newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	if r.err != nil || r.stdout != second {
		t.Fatalf("container after rotate did not read the new secret:\n%s", r)
	}

	st := e.ctl(t, "status", "--json")
	var s map[string]any
	if st.err != nil || json.Unmarshal([]byte(st.stdout), &s) != nil {
		t.Fatalf("status --json:\n%s", st)
	}
	if s["sealer"] != "tpm" || s["generation"] != float64(2) || s["tpm_path"] != tpm.path() {
		t.Errorf("status = %v", s)
	}
	for _, secret := range []string{first, second} {
		if strings.Contains(st.stdout, secret) || strings.Contains(st.stderr, secret) {
			t.Error("status shows the secret")
		}
		assertAbsent(t, secret, e.cfg.StateDir, tpm.dir)
	}
	if d := e.ctl(t, "doctor"); d.err != nil || !strings.Contains(d.stdout, "reachable, SRK usable") {
		t.Errorf("doctor:\n%s", d)
	}
}

// assertAbsent fails if the secret's hex or raw bytes are in any file under
// the directories.
func assertAbsent(t *testing.T, secretHex string, dirs ...string) {
	t.Helper()
	raw, _ := hex.DecodeString(secretHex)
	for _, dir := range dirs {
		_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			data, _ := os.ReadFile(p)
			if bytes.Contains(bytes.ToLower(data), []byte(secretHex)) || bytes.Contains(data, raw) {
				t.Errorf("%s contains the secret", p)
			}
			return nil
		})
	}
}

// TestTPMStateCopiedToAnotherTPM: the state directory is useless with any
// other TPM.
func TestTPMStateCopiedToAnotherTPM(t *testing.T) {
	requires(t, "runc", "swtpm")
	e := newTPMEnv(t, newSWTPM(t, nil), "[]", nil)

	other := newSWTPM(t, nil)
	e2 := newTPMEnv(t, other, "[]", nil) // creates the second TPM's SRK
	mustRun(t, exec.Command("rm", "-rf", e2.cfg.StateDir))
	mustRun(t, exec.Command("cp", "-a", e.cfg.StateDir, e2.cfg.StateDir))

	r := newBundle(t, e2.dir, false, "echo started").withHook("createRuntime", e2.config).runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "started") {
		t.Fatalf("container started with a secret from another TPM:\n%s", r)
	}
	if !strings.Contains(r.stderr, "northstar-hook: unseal:") || !strings.Contains(r.stderr, "another key or TPM") || !strings.Contains(r.stderr, "northstarctl rotate") {
		t.Errorf("error does not say the blob belongs to another TPM and how to fix it:\n%s", r)
	}
}

// TestTPMPCRBinding: with pcrs=[16], a changed PCR 16 stops containers with
// an error naming the PCR and the fix; rotate recovers.
func TestTPMPCRBinding(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e := newTPMEnv(t, tpm, "[16]", nil)
	if r := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t); r.err != nil {
		t.Fatalf("container failed before the PCR changed:\n%s", r)
	}
	tpm.extendPCR(t, 16)
	r := newBundle(t, e.dir, false, "echo started").withHook("createRuntime", e.config).runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "started") {
		t.Fatalf("container started after PCR 16 changed:\n%s", r)
	}
	if !strings.Contains(r.stderr, "PCR 16") || !strings.Contains(r.stderr, "northstarctl rotate") {
		t.Errorf("error does not name the PCR and the fix:\n%s", r)
	}
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	want := e.secretHex(t)
	r = newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	if r.err != nil || r.stdout != want {
		t.Fatalf("container after rotate:\n%s", r)
	}
}

// TestTPMPCRConfigEnforced: binding the secret to PCRs in the config takes
// effect at once: a secret sealed before, to no PCRs, stops unsealing (the
// hook and doctor name the PCRs and the fix) until rotate seals it to them.
func TestTPMPCRConfigEnforced(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e := newTPMEnv(t, tpm, "[]", nil)
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(data), "pcrs = []", "pcrs = [16]", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if e.cfg, err = config.Load(e.config); err != nil {
		t.Fatal(err)
	}
	r := newBundle(t, e.dir, false, "echo started").withHook("createRuntime", e.config).runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "started") {
		t.Fatalf("container started with a secret sealed to other PCRs than the config's:\n%s", r)
	}
	if !strings.Contains(r.stderr, "sealed to sha256 PCR none, the config says 16") || !strings.Contains(r.stderr, "northstarctl rotate") {
		t.Errorf("error does not name the PCRs and the fix:\n%s", r)
	}
	if d := e.ctl(t, "doctor"); d.err == nil || !strings.Contains(d.stdout, "FAIL  unseal:") || !strings.Contains(d.stdout, "northstarctl rotate") {
		t.Errorf("doctor does not fail on the PCR mismatch:\n%s", d)
	}
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	r = newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config).runcRun(t)
	if r.err != nil || r.stdout != e.secretHex(t) {
		t.Fatalf("container after rotate:\n%s", r)
	}
}

// TestTPMThatNeverAnswers: a TPM socket that accepts and never answers (a
// wedged swtpm, or something squatting on its path) fails the container
// within [tpm] timeout, naming the TPM and the setting, instead of holding
// every start until the runtime's hook timeout.
func TestTPMThatNeverAnswers(t *testing.T) {
	requires(t, "runc", "swtpm")
	e := newTPMEnv(t, newSWTPM(t, nil), "[]", nil) // sealed on a real TPM
	dir := worldDir(t)
	sock := filepath.Join(dir, "stuck.sock")
	testenv.NeverAnswers(t, sock)
	data, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := regexp.MustCompile(`path = "[^"]*"`).ReplaceAllString(string(data), fmt.Sprintf("path = %q\ntimeout = \"2s\"", "unix:"+sock))
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := newBundle(t, e.dir, false, "echo started").withHook("createRuntime", e.config).runcRun(t)
	took := time.Since(start)
	if r.err == nil || strings.Contains(r.stdout, "started") {
		t.Fatalf("container started with a TPM that never answers:\n%s", r)
	}
	if !strings.Contains(r.stderr, "tpm unix:"+sock+": gave up after 2s ([tpm] timeout)") {
		t.Errorf("error does not name the TPM and the timeout:\n%s", r)
	}
	if took > 10*time.Second {
		t.Errorf("the start failed after %v; want about the 2s [tpm] timeout", took)
	}
	t.Logf("refused after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
}

// TestTPMStopped: an unreachable TPM fails the container closed, naming the
// TPM path.
func TestTPMStopped(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm := newSWTPM(t, nil)
	e := newTPMEnv(t, tpm, "[]", nil)
	tpm.stop()
	r := newBundle(t, e.dir, false, "echo started").withHook("createRuntime", e.config).runcRun(t)
	if r.err == nil || strings.Contains(r.stdout, "started") {
		t.Fatalf("container started without a TPM:\n%s", r)
	}
	if !strings.Contains(r.stderr, "northstar-hook: unseal: tpm: open "+tpm.path()) {
		t.Errorf("error does not name the TPM path:\n%s", r)
	}
}

// TestTPMConcurrentHooks: many containers start at once against one socket
// swtpm (which serves one client at a time and holds three transient
// objects): all get the same secret.
func TestTPMConcurrentHooks(t *testing.T) {
	requires(t, "runc", "swtpm")
	e := newTPMEnv(t, newSWTPM(t, nil), "[]", nil)
	want := e.secretHex(t)
	const n = 16
	bundles := make([]*bundle, n)
	for i := range bundles {
		bundles[i] = newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config)
	}
	for i, r := range runcRunAll(t, bundles) {
		if r.err != nil || r.stdout != want {
			t.Errorf("container %d:\n%s", i, r)
		}
	}
}

// TestTPMRotateSurvivesSIGKILL kills rotations at random points: afterwards
// the stored secret always unseals (the old or the new one, never neither).
func TestTPMRotateSurvivesSIGKILL(t *testing.T) {
	requires(t, "swtpm")
	e := newTPMEnv(t, newSWTPM(t, nil), "[]", nil)
	st := e.store(t)
	// How long a rotation takes here, to spread the kills over it.
	begin := time.Now()
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	span := time.Since(begin)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	killed := 0
	for i := 0; i < 40; i++ {
		before, err := st.Current()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bins.ctl, "rotate", "--config", e.config)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int63n(int64(span) + 1)))
		_ = cmd.Process.Kill()
		if err := cmd.Wait(); err != nil {
			killed++
		}
		sec, rec, err := st.Secret(context.Background())
		if err != nil {
			t.Fatalf("iteration %d: after a killed rotation the secret does not unseal: %v", i, err)
		}
		sec.Zero()
		if rec.Generation != before.Generation && rec.Generation != before.Generation+1 {
			t.Fatalf("iteration %d: generation %d after %d", i, rec.Generation, before.Generation)
		}
	}
	t.Logf("%d of 40 rotations killed midway (rotation takes ~%v)", killed, span)
	if killed == 0 {
		t.Error("no rotation was interrupted: the test proved nothing")
	}
}
