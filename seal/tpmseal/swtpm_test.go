// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// newSWTPM starts a real swtpm with a fresh state in a temp dir, stopped by
// t.Cleanup, and returns its [tpm] path: "unix:SOCK" for network "unix",
// "tcp:127.0.0.1:PORT" for "tcp". Without swtpm the test is skipped, except
// in CI (CI=true), where a missing swtpm is a failure.
func newSWTPM(tb testing.TB, network string) string {
	tb.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("swtpm is not installed (apt-get install swtpm): %v", err)
		}
		tb.Skipf("swtpm is not installed: %v", err)
	}
	dir := tb.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		tb.Fatal(err)
	}
	var server, ctrl, path string
	switch network {
	case "unix":
		sock := filepath.Join(dir, "sock")
		server, ctrl, path = "type=unixio,path="+sock, "type=unixio,path="+filepath.Join(dir, "ctrl"), "unix:"+sock
	case "tcp":
		port := freePort(tb)
		server, ctrl = fmt.Sprintf("type=tcp,port=%d", port), fmt.Sprintf("type=tcp,port=%d", freePort(tb))
		path = fmt.Sprintf("tcp:127.0.0.1:%d", port)
	default:
		tb.Fatalf("newSWTPM: unknown network %q", network)
	}
	args := []string{"socket", "--tpm2", "--server", server, "--ctrl", ctrl,
		"--tpmstate", "dir=" + state, "--flags", "not-need-init,startup-clear"}
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})

	// swtpm creates its socket some 10-20 ms after exec; poll by connecting,
	// which for tcp is the only way to know it listens.
	network, addr, _ := strings.Cut(path, ":")
	for {
		conn, err := net.Dial(network, addr)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-exited:
			tb.Fatalf("%s %s exited early: %v\n%s", bin, strings.Join(args, " "), err, out.Bytes())
		case <-time.After(2 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Second {
			tb.Fatalf("%s %s: no socket after %v\n%s", bin, strings.Join(args, " "), time.Since(start), out.Bytes())
		}
	}
	tb.Logf("swtpm listening at %s after %v", path, time.Since(start).Round(100*time.Microsecond))
	return path
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newSWTPMSealer(tb testing.TB, network string, pcrs ...int) *TPM {
	return newSealer(tb, Options{Path: newSWTPM(tb, network), PCRs: pcrs})
}

func TestSWTPMRoundTrip(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			testRoundTrip(t, newSWTPMSealer(t, network, 7))
		})
	}
}

// Many hooks at once against one socket swtpm: the lock file makes them take
// turns, and every one gets the secret.
func TestSWTPMConcurrentHooks(t *testing.T) {
	path := newSWTPM(t, "unix")
	lock := filepath.Join(t.TempDir(), "tpm.lock")
	pt := randomSecret(t)
	blob := mustSeal(t, newSealer(t, Options{Path: path, PCRs: []int{7}}), pt)

	const hooks = 32
	var wg sync.WaitGroup
	errs := make(chan error, hooks)
	start := time.Now()
	for range hooks {
		wg.Go(func() {
			// Each its own sealer and lock descriptor, like separate processes.
			s, err := New(Options{Path: path, PCRs: []int{7}, LockPath: lock})
			if err != nil {
				errs <- err
				return
			}
			got, err := s.Unseal(context.Background(), blob)
			if err == nil && !bytes.Equal(got, pt) {
				err = fmt.Errorf("wrong secret %x", got)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d concurrent unseals in %v", hooks, time.Since(start).Round(time.Millisecond))
}

// A hook killed mid-exchange leaves its object and session loaded in swtpm
// (no resource manager; closing the connection frees nothing). Two such
// leftovers make every later Load fail with TPM_RC_OBJECT_MEMORY; under the
// lock file, the sealer flushes them and carries on.
func TestSWTPMLeftoversOfKilledHooks(t *testing.T) {
	path := newSWTPM(t, "unix")
	pt := randomSecret(t)
	unlocked, err := New(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	blob := mustSeal(t, unlocked, pt)
	b, _, err := decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	// A conversation that leaks a session and an object: it returns
	// without flushing, as a hook killed mid-exchange would.
	killedHook := func() {
		err := unlocked.conversation(context.Background(), func(tpm transport.TPM) error {
			srk, err := readSRK(tpm)
			if err != nil {
				return err
			}
			if _, _, err := tpm2.PolicySession(tpm, tpm2.TPMAlgSHA256, 16); err != nil {
				t.Logf("leak a session: %v", err)
			}
			_, err = tpm2.Load{
				ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
				InPrivate:    tpm2.TPM2BPrivate{Buffer: b.Private},
				InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
			}.Execute(tpm)
			if err != nil {
				t.Logf("leak an object: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		killedHook()
	}
	_, err = unlocked.Unseal(context.Background(), blob)
	if !errors.Is(err, tpm2.TPMRCObjectMemory) && !errors.Is(err, tpm2.TPMRCSessionMemory) {
		t.Fatalf("Unseal after killed hooks, without lock = %v; want TPM_RC_OBJECT_MEMORY or TPM_RC_SESSION_MEMORY", err)
	}
	t.Logf("without the lock file: %v", err)

	locked := newSealer(t, Options{Path: path})
	wantUnseal(t, locked, blob, pt)
	assertNothingLoaded(t, locked)
}

func BenchmarkSWTPMUnseal(b *testing.B) {
	s := newSWTPMSealer(b, "unix", 7)
	pt := randomSecret(b)
	blob := mustSeal(b, s, pt)
	for b.Loop() {
		wantUnseal(b, s, blob, pt)
	}
}

func BenchmarkSWTPMSeal(b *testing.B) {
	s := newSWTPMSealer(b, "unix", 7)
	pt := randomSecret(b)
	mustSeal(b, s, pt)
	for b.Loop() {
		mustSeal(b, s, pt)
	}
}
