// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/measure"
	"github.com/northstar-oci/northstar/attest"
	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// measuredBundle is a runc bundle with the hook that speaks as identity.
func measuredBundle(t *testing.T, e *env, identity string) *bundle {
	t.Helper()
	b := newBundle(t, e.dir, false, "cat /run/northstar/secret").withHook("createRuntime", e.config)
	if b.spec.Annotations == nil {
		b.spec.Annotations = map[string]string{}
	}
	b.spec.Annotations["io.northstar.identity"] = identity
	return b
}

// attestUntil runs `attest` and `attest verify` until verify lists every
// identity in want (the agent extends in the background), and returns the
// evidence file, its nonce and verify's output.
func attestUntil(t *testing.T, e *env, ekCA string, want ...string) (string, string, string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		nonce := randomHex(t, 32)
		r := e.ctl(t, "attest", "--nonce", nonce)
		if r.err != nil {
			t.Fatalf("attest:\n%s", r)
		}
		file := filepath.Join(e.dir, "evidence.json")
		writeFile(t, file, r.stdout)
		v := e.ctl(t, "attest", "verify", file, "--nonce", nonce, "--ek-ca", ekCA)
		if v.err != nil {
			t.Fatalf("attest verify refused the host's evidence:\n%s", v)
		}
		all := true
		for _, id := range want {
			all = all && strings.Contains(v.stdout, "identity "+id+" ")
		}
		if all {
			return file, nonce, v.stdout
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s on, verify does not list %v:\n%s", want, v)
		}
	}
}

// TestMeasuredContainers: with [measure] enable, containers started by
// runc with the hook and the agent are each logged (id, identity, the
// SHA-256 of their config.json, their rootfs) and the log's batches
// extended into an NV index only the agent writes; `attest` carries the
// log and the AK's certification of the index, and `attest verify`
// replays it and lists them. A log dropped, edited or reordered is
// refused with its line; another process cannot extend the index without
// its auth; a restarted agent goes on with the same log, and refuses a
// log that no longer matches the index.
func TestMeasuredContainers(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm, ekCA := newSWTPMWithEK(t)
	e, sock := newAgentTPMEnv(t, tpm, "[measure]\nenable = true\ninterval = \"20ms\"\n")
	a := startAgent(t, e, sock)

	var bundles []*bundle
	for i := range 3 {
		b := measuredBundle(t, e, fmt.Sprintf("measured-%d", i))
		if r := b.runcRun(t); r.err != nil || !isSecretHex(strings.TrimSpace(r.stdout)) {
			t.Fatalf("container %d:\n%s", i, r)
		}
		bundles = append(bundles, b)
	}
	evFile, nonce, out := attestUntil(t, e, ekCA, "measured-0", "measured-1", "measured-2")
	t.Logf("attest verify:\n%s", out)
	for _, want := range []string{
		"ok    NV index 0x14e5327 [extend authwrite ownerread no_da written], certified by the AK over the nonce: only the agent extends it",
		"3 containers",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify does not say %q:\n%s", want, out)
		}
	}
	if r := e.ctl(t, "status"); r.err != nil || !strings.Contains(r.stdout, "measured:     3 containers in ") {
		t.Errorf("status does not count the measured containers:\n%s", r)
	}
	for i, b := range bundles {
		config, err := os.ReadFile(filepath.Join(b.dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(config)
		var st unix.Stat_t
		if err := unix.Stat(b.rootfs, &st); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("identity measured-%d  config sha256:%s  rootfs ", i, hex.EncodeToString(sum[:]))
		if !strings.Contains(out, line) || !strings.Contains(out, fmt.Sprintf("dev=%d:%d ino=%d\n", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)) {
			t.Errorf("verify does not list container %d as %q with its rootfs's inode %d:\n%s", i, line, st.Ino, out)
		}
	}

	// The log tampered with: refused, naming the record.
	var ev attest.Evidence
	if err := json.Unmarshal([]byte(mustRead(t, evFile)), &ev); err != nil {
		t.Fatal(err)
	}
	recs, err := containerlog.Parse(ev.Containers.Log)
	if err != nil {
		t.Fatal(err)
	}
	first := -1 // the first container record
	for i, r := range recs {
		if r.Content.Type == containerlog.ContentContainer {
			first = i
			break
		}
	}
	for _, tc := range []struct {
		name   string
		tamper func([]containerlog.Record) []containerlog.Record
		want   string
	}{
		{"dropped", func(r []containerlog.Record) []containerlog.Record { return append(r[:first:first], r[first+1:]...) },
			fmt.Sprintf("the container log does not replay: record %d: numbered %d", first, first+1)},
		{"edited", func(r []containerlog.Record) []containerlog.Record {
			r[first].Content.Value = bytes.Replace(r[first].Content.Value, []byte("measured-0"), []byte("measured-X"), 1)
			return r
		}, fmt.Sprintf("the container log does not replay: record %d: its digest is not its content's", first)},
		{"reordered", func(r []containerlog.Record) []containerlog.Record {
			r[first], r[first+1] = r[first+1], r[first]
			return r
		}, fmt.Sprintf("the container log does not replay: record %d: numbered %d", first, first+1)},
	} {
		bad := ev
		c := *ev.Containers
		c.Log = containerlog.Encode(tc.tamper(append([]containerlog.Record(nil), recs...)))
		bad.Containers = &c
		file := writeEvidence(t, e.dir, tc.name+".json", &bad)
		refusedWith(t, "a log with a record "+tc.name, e.ctl(t, "attest", "verify", file, "--nonce", nonce, "--ek-ca", ekCA), tc.want)
	}

	// The log left out: a verifier that requires it refuses.
	stripped := ev
	stripped.Containers = nil
	file := writeEvidence(t, e.dir, "stripped.json", &stripped)
	refusedWith(t, "evidence without its log", e.ctl(t, "attest", "verify", file, "--nonce", nonce, "--ek-ca", ekCA, "--containers"),
		"the container log does not replay: the evidence carries none")

	// Another process, without the index's auth, cannot extend it: the
	// TPM refuses, and the index does not move.
	topts := tpmconn.Options{Path: tpm.path(), LockPath: strings.TrimPrefix(tpm.path(), "unix:") + ".lock"}
	err = tpmconn.Converse(context.Background(), topts, func(tp transport.TPM) error {
		return measure.Extend(tp, containerlog.DefaultIndex, bytes.Repeat([]byte{1}, measure.AuthSize), make([]byte, 32))
	})
	if !errors.Is(err, tpm2.TPMRCBadAuth) {
		t.Errorf("an extend with another auth: %v, want TPM_RC_BAD_AUTH", err)
	}
	err = tpmconn.Converse(context.Background(), topts, func(tp transport.TPM) error {
		return measure.Extend(tp, containerlog.DefaultIndex, nil, make([]byte, 32))
	})
	if !errors.Is(err, tpm2.TPMRCBadAuth) && !errors.Is(err, tpm2.TPMRCAuthFail) {
		t.Errorf("an extend with no auth: %v, want it refused", err)
	}

	// A restart: the same log goes on.
	if err := a.stop(t); err != nil {
		t.Fatalf("agent stop: %v\n%s", err, a.out)
	}
	a = startAgent(t, e, sock)
	b := measuredBundle(t, e, "measured-3")
	if r := b.runcRun(t); r.err != nil {
		t.Fatalf("container after the restart:\n%s", r)
	}
	_, _, out = attestUntil(t, e, ekCA, "measured-0", "measured-3")
	if !strings.Contains(out, "4 containers") {
		t.Errorf("after the restart verify does not list 4 containers:\n%s", out)
	}

	// A log that no longer matches the index (its last batch cut off):
	// the agent refuses to start, in one line naming the fix.
	if err := a.stop(t); err != nil {
		t.Fatalf("agent stop: %v\n%s", err, a.out)
	}
	logPath := filepath.Join(e.cfg.StateDir, measure.FileName)
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	all, err := containerlog.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := containerlog.Replay(all, containerlog.DefaultIndex)
	if err != nil {
		t.Fatal(err)
	}
	cut := all[:rp.Extended-1]
	for len(cut) > 0 && cut[len(cut)-1].Content.Type == containerlog.ContentContainer {
		cut = cut[:len(cut)-1]
	}
	if err := os.WriteFile(logPath, containerlog.Encode(cut[:len(cut)-1]), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := run(t, exec.CommandContext(ctx, bins.ctl, "agent", "--config", e.config))
	if r.err == nil || !strings.Contains(r.stderr+r.stdout, "the container log "+logPath+" replays to ") ||
		!strings.Contains(r.stderr+r.stdout, "tpm2_nvundefine -C o 0x14e5327") {
		t.Fatalf("the agent started on a log that does not match its index:\n%s", r)
	}
	if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
		t.Errorf("the refusal takes %d lines, want one:\n%s", n+1, r.stderr)
	}
}

// TestMeasuredContainersNRI: a Kubernetes container started through
// containerd's NRI, with no hook, is measured too: logged as delivered by
// "nri", with its image's overlay layers as its rootfs.
func TestMeasuredContainersNRI(t *testing.T) {
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	requires(t, "swtpm")
	tpm, ekCA := newSWTPMWithEK(t)
	sock := agentSocket(t, nil)
	nriSock := filepath.Join(filepath.Dir(filepath.Dir(sock)), "nri.sock")
	e := newEnvWith(t, fmt.Sprintf("sealer = \"tpm\"\n[tpm]\npath = %q\npcrs = []\n[agent]\nsocket = %q\n[nri]\nenable = true\nsocket = %q\n"+
		"[measure]\nenable = true\ninterval = \"20ms\"\n", tpm.path(), sock, nriSock), nil)
	a := startAgent(t, e, sock)
	c := startNRIContainerd(t, e, a, "containerd 2.4.2 (NRI, measured)")
	p := c.runPod(t, "web")
	app := c.runContainer(t, p, "app")
	if c.hasNorthstarHook(t, app) {
		t.Fatal("the container's spec runs the northstar hook; want the agent's mounts and no hook")
	}
	_, _, out := attestUntil(t, e, ekCA, "default/web/app")
	t.Logf("attest verify:\n%s", out)
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "identity default/web/app ") {
			line = l
		}
	}
	if !strings.Contains(line, " nri  "+app+" ") || !strings.Contains(line, "rootfs overlay lowerdir=") || strings.Contains(line, "config sha256:"+strings.Repeat("0", 64)) {
		t.Errorf("verify lists the NRI container as %q, want delivered by nri, a config digest and its overlay layers:\n%s", line, out)
	}
}

// TestMeasuredEvidenceToPeers: the evidence the agent serves federation
// peers (GET /evidence) carries the container log too, and verifies.
func TestMeasuredEvidenceToPeers(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm, ekCA := newSWTPMWithEK(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e, sock := newAgentTPMEnv(t, tpm, fmt.Sprintf("[api]\nenable = true\n[spiffe]\ntrust_domain = \"m.example\"\nroot = \"tpm\"\n"+
		"[federation]\nenable = true\nlisten = %q\n[measure]\nenable = true\ninterval = \"20ms\"\n", addr))
	startAgent(t, e, sock)
	if r := measuredBundle(t, e, "peer-seen").runcRun(t); r.err != nil {
		t.Fatalf("container:\n%s", r)
	}
	// The evidence authenticates itself: its TLS is not checked here.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		nonce := randomHex(t, 32)
		rsp, err := hc.Get("https://" + addr + "/evidence?nonce=" + nonce)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			continue
		}
		body, err := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		if err != nil || rsp.StatusCode != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("GET /evidence: %d %v %s", rsp.StatusCode, err, body)
			}
			continue
		}
		file := filepath.Join(e.dir, "served.json")
		writeFile(t, file, string(body))
		v := e.ctl(t, "attest", "verify", file, "--nonce", nonce, "--ek-ca", ekCA)
		if v.err != nil {
			t.Fatalf("attest verify refused the served evidence:\n%s", v)
		}
		if strings.Contains(v.stdout, "identity peer-seen ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s on, the served evidence does not list the container:\n%s", v)
		}
	}
}

// TestMeasuredStartWithoutTPM: a start never waits for the TPM: with the
// TPM stopped, a measured container starts; its batch is extended once
// the TPM is back, and the agent says when extends fail and work again.
func TestMeasuredStartWithoutTPM(t *testing.T) {
	requires(t, "runc", "swtpm")
	tpm, ekCA := newSWTPMWithEK(t)
	e, sock := newAgentTPMEnv(t, tpm, "[measure]\nenable = true\ninterval = \"20ms\"\n")
	a := startAgent(t, e, sock)
	tpm.stop()
	began := time.Now()
	if r := measuredBundle(t, e, "no-tpm").runcRun(t); r.err != nil || !isSecretHex(strings.TrimSpace(r.stdout)) {
		t.Fatalf("a measured container with the TPM stopped:\n%s", r)
	}
	t.Logf("started in %s with the TPM stopped", time.Since(began).Round(time.Millisecond))
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(a.out.String(), "measure: cannot extend NV index 0x14e5327, retrying"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent does not say its extends fail:\n%s", a.out)
		}
	}
	tpm.serveManufactured(t)
	attestUntil(t, e, ekCA, "no-tpm")
	if !strings.Contains(a.out.String(), "measure: extending NV index 0x14e5327 works again") {
		t.Errorf("the agent does not say extends work again:\n%s", a.out)
	}
}
