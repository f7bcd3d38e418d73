// SPDX-License-Identifier: Apache-2.0

package tpmseal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/seal/tpmconn"

	"github.com/northstar-oci/northstar/seal"
)

// The in-process reference TPM exists once per process: every test shares
// it through sim, and TestMain shuts it down.
var sim struct {
	once sync.Once
	tpm  transport.TPMCloser
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sim.tpm != nil {
		sim.tpm.Close()
	}
	os.Exit(code)
}

// simTPM returns the shared simulator. The sealer closes what Open returns,
// so tests get a wrapper whose Close does nothing.
func simTPM(tb testing.TB) transport.TPM {
	tb.Helper()
	sim.once.Do(func() { sim.tpm, sim.err = simulator.OpenSimulator() })
	if sim.err != nil {
		tb.Fatalf("start TPM simulator: %v", sim.err)
	}
	return sim.tpm
}

type nopCloser struct{ transport.TPM }

func (nopCloser) Close() error { return nil }

func newSimSealer(tb testing.TB, pcrs ...int) *TPM {
	tb.Helper()
	tpm := simTPM(tb)
	return newSealer(tb, Options{
		PCRs: pcrs,
		Open: func() (transport.TPMCloser, error) { return nopCloser{tpm}, nil },
	})
}

func newSealer(tb testing.TB, opts Options) *TPM {
	tb.Helper()
	opts.LockPath = filepath.Join(tb.TempDir(), "tpm.lock")
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func randomSecret(tb testing.TB) []byte {
	tb.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustSeal(tb testing.TB, s *TPM, pt []byte) []byte {
	tb.Helper()
	blob, err := s.Seal(context.Background(), pt)
	if err != nil {
		tb.Fatalf("Seal: %v", err)
	}
	return blob
}

func wantUnseal(tb testing.TB, s *TPM, blob, want []byte) {
	tb.Helper()
	got, err := s.Unseal(context.Background(), blob)
	if err != nil {
		tb.Fatalf("Unseal: %v", err)
	}
	if !bytes.Equal(got, want) {
		tb.Fatalf("Unseal = %x, want %x", got, want)
	}
}

// testRoundTrip is shared by the simulator and swtpm tests.
func testRoundTrip(t *testing.T, s *TPM) {
	ctx := context.Background()
	pt := randomSecret(t)
	blob := mustSeal(t, s, pt)
	if bytes.Contains(blob, pt[:8]) || bytes.Contains(blob, pt[24:]) {
		t.Error("blob contains plaintext")
	}
	wantUnseal(t, s, blob, pt)
	wantUnseal(t, s, blob, pt) // and again: nothing left loaded that breaks a second call

	b, _, err := decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	name, err := s.SRKName(ctx)
	if err != nil {
		t.Fatalf("SRKName: %v", err)
	}
	if !bytes.Equal(b.SRKName, name) {
		t.Errorf("blob SRK name %x, SRKName() %x", b.SRKName, name)
	}
	if err := s.Probe(ctx); err != nil {
		t.Errorf("Probe: %v", err)
	}
	assertNothingLoaded(t, s)
}

// assertNothingLoaded checks that no transient object or session is left
// behind (swtpm without a resource manager has room for only three).
func assertNothingLoaded(t *testing.T, s *TPM) {
	t.Helper()
	err := s.conversation(context.Background(), func(tpm transport.TPM) error {
		hs, err := tpmconn.LoadedHandles(tpm)
		if len(hs) != 0 {
			t.Errorf("left loaded after the call: %#x", hs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTPMRoundTrip(t *testing.T) {
	for _, pcrs := range [][]int{nil, {16}, {0, 7, 16, 23}} {
		t.Run("pcrs="+seal.FormatPCRs(pcrs), func(t *testing.T) {
			testRoundTrip(t, newSimSealer(t, pcrs...))
		})
	}
}

func TestTPMSealSizes(t *testing.T) {
	s := newSimSealer(t)
	for _, n := range []int{1, maxSealSize} {
		pt := bytes.Repeat([]byte{0xa5}, n)
		wantUnseal(t, s, mustSeal(t, s, pt), pt)
	}
	for _, n := range []int{0, maxSealSize + 1} {
		if _, err := s.Seal(context.Background(), make([]byte, n)); err == nil {
			t.Errorf("Seal of %d bytes succeeded", n)
		}
	}
}

func extendPCR(t *testing.T, pcr int) {
	t.Helper()
	tpm := simTPM(t)
	sum := sha256.Sum256([]byte("northstar test event"))
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: sum[:],
		}}},
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("PCRExtend %d: %v", pcr, err)
	}
	// PCR 16 is the debug PCR, resettable from locality 0: leave it clean.
	t.Cleanup(func() {
		_, err := tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)}}.Execute(tpm)
		if err != nil {
			t.Errorf("PCRReset %d: %v", pcr, err)
		}
	})
}

func TestTPMPCRChanged(t *testing.T) {
	s := newSimSealer(t, 16, 7)
	pt := randomSecret(t)
	blob := mustSeal(t, s, pt)
	unbound := newSimSealer(t)
	blobUnbound := mustSeal(t, unbound, pt)

	extendPCR(t, 16)
	_, err := s.Unseal(context.Background(), blob)
	if !errors.Is(err, seal.ErrPCRChanged) {
		t.Fatalf("Unseal after PCRExtend = %v, want seal.ErrPCRChanged", err)
	}
	// The remedy ("run 'northstarctl rotate'") is added by the front ends
	// (package remedy), not here.
	for _, want := range []string{"tpm2.Unseal", "PCR 7,16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("error: %v", err)
	assertNothingLoaded(t, s)

	// A blob not bound to PCRs does not care; a re-seal binds the new values.
	wantUnseal(t, unbound, blobUnbound, pt)
	wantUnseal(t, s, mustSeal(t, s, pt), pt)
}

// TestTPMPCRSelectionEnforced: the configured PCRs are enforced at unseal,
// not only at seal: a blob bound to other PCRs (sealed before the config
// changed) is refused, in both directions.
func TestTPMPCRSelectionEnforced(t *testing.T) {
	pt := randomSecret(t)
	unbound := mustSeal(t, newSimSealer(t), pt)
	bound := mustSeal(t, newSimSealer(t, 7), pt)
	for _, tt := range []struct {
		name string
		s    *TPM
		blob []byte
		want string
	}{
		{"sealed to no PCRs, config binds PCR 7", newSimSealer(t, 7), unbound, "sealed to sha256 PCR none, the config says 7"},
		{"sealed to PCR 7, config binds none", newSimSealer(t), bound, "sealed to sha256 PCR 7, the config says none"},
		{"sealed to PCR 7, config binds 7 and 16", newSimSealer(t, 16, 7), bound, "the config says 7,16"},
	} {
		_, err := tt.s.Unseal(context.Background(), tt.blob)
		if !errors.Is(err, seal.ErrPCRSelection) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Unseal = %v; want seal.ErrPCRSelection and %q", tt.name, err, tt.want)
		}
	}
	// Same selection, given in another order: fine.
	wantUnseal(t, newSimSealer(t, 7), bound, pt)
}

// clearTPM resets the owner hierarchy like `tpm2_clear`: a new owner seed,
// so the SRK made from the same template is a different key. The persistent
// SRK is evicted by the clear.
func clearTPM(t *testing.T) {
	t.Helper()
	_, err := tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}.Execute(simTPM(t))
	if err != nil {
		t.Fatalf("TPM2_Clear: %v", err)
	}
}

func TestTPMWrongSRK(t *testing.T) {
	ctx := context.Background()
	s := newSimSealer(t)
	pt := randomSecret(t)
	blob := mustSeal(t, s, pt)
	before, err := s.SRKName(ctx)
	if err != nil {
		t.Fatal(err)
	}

	clearTPM(t)
	if _, err := s.SRKName(ctx); !errors.Is(err, seal.ErrNoKey) {
		t.Errorf("SRKName after clear = %v, want seal.ErrNoKey", err)
	}
	if err := s.Probe(ctx); err != nil {
		t.Errorf("Probe without SRK: %v", err)
	}
	if _, err := s.SRKName(ctx); !errors.Is(err, seal.ErrNoKey) {
		t.Errorf("Probe persisted an SRK: SRKName = %v", err)
	}

	// Unseal recreates the SRK (same template, new seed) and finds it is
	// not the one the blob was sealed under.
	_, err = s.Unseal(ctx, blob)
	if !errors.Is(err, seal.ErrWrongKey) {
		t.Fatalf("Unseal after TPM2_Clear = %v, want seal.ErrWrongKey", err)
	}
	t.Logf("error: %v", err)
	after, err := s.SRKName(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) {
		t.Fatal("SRK name unchanged by TPM2_Clear")
	}
	assertNothingLoaded(t, s)
	wantUnseal(t, s, mustSeal(t, s, pt), pt)
}

// An SRK that is only evicted (not cleared) comes back identical: the
// primary is derived from the unchanged owner seed, so old blobs still work.
func TestTPMSRKEvictedAndRecreated(t *testing.T) {
	s := newSimSealer(t)
	pt := randomSecret(t)
	blob := mustSeal(t, s, pt)
	evictSRK(t)
	wantUnseal(t, s, blob, pt)
}

func evictSRK(t *testing.T) {
	t.Helper()
	tpm := simTPM(t)
	rsp, err := tpm2.ReadPublic{ObjectHandle: SRKHandle}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: SRKHandle, Name: rsp.Name},
		PersistentHandle: SRKHandle,
	}.Execute(tpm)
	if err != nil {
		t.Fatalf("evict SRK: %v", err)
	}
}

// A key at 0x81000001 that is not the standard SRK is refused, not used.
func TestTPMForeignKeyAtSRKHandle(t *testing.T) {
	s := newSimSealer(t)
	mustSeal(t, s, randomSecret(t)) // make sure there is an SRK to replace
	evictSRK(t)
	t.Cleanup(func() { evictSRK(t) })

	tpm := simTPM(t)
	rsa := tpm2.RSASRKTemplate
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(rsa),
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	defer flushContext(tpm, rsp.ObjectHandle)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: SRKHandle,
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}

	_, err = s.Seal(context.Background(), randomSecret(t))
	if err == nil || !strings.Contains(err.Error(), "not the TCG ECC P-256 SRK") {
		t.Fatalf("Seal under an RSA key at the SRK handle = %v, want a refusal", err)
	}
	t.Logf("error: %v", err)
	if err := s.Probe(context.Background()); err == nil {
		t.Error("Probe accepted a foreign key at the SRK handle")
	}
}

// otherSRK is b claiming to be sealed under another key made from the SRK
// template: its name and public area, consistent with each other.
func otherSRK(t *testing.T, b *seal.TPMBlob) []byte {
	t.Helper()
	pub := tpm2.ECCSRKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{7}, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{7}, 32)},
	})
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	c := *b
	c.SRKName, c.SRKPublic = name.Buffer, tpm2.Marshal(pub)
	return c.Encode()
}

func TestTPMRefusesTamperedBlobs(t *testing.T) {
	s := newSimSealer(t, 16)
	blob := mustSeal(t, s, randomSecret(t))
	b, _, err := decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	pubAt := len("NST\x01") + 2
	privAt := pubAt + len(b.Public) + 2
	nameAt := privAt + len(b.Private) + 2
	pcrAt := nameAt + len(b.SRKName) + 1
	flip := func(i int) []byte {
		c := bytes.Clone(blob)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, seal.ErrCorrupt},
		{"garbage", []byte("this is not a sealed blob, not at all"), seal.ErrCorrupt},
		{"host blob", append([]byte("NSH\x01"), make([]byte, 40)...), seal.ErrCorrupt},
		{"truncated by one", blob[:len(blob)-1], seal.ErrCorrupt},
		{"truncated in private", blob[:privAt+10], seal.ErrCorrupt},
		{"trailing byte", append(bytes.Clone(blob), 0), seal.ErrCorrupt},
		{"future version", append([]byte("NST\x03"), blob[4:]...), seal.ErrUnknownVersion},
		{"public: attribute byte", flip(pubAt + 7), seal.ErrCorrupt},
		{"public: policy digest", flip(pubAt + 12), seal.ErrCorrupt},
		{"public: last byte", flip(privAt - 3), seal.ErrCorrupt},
		{"private: integrity HMAC", flip(privAt + 4), seal.ErrCorrupt},
		{"private: middle", flip(privAt + len(b.Private)/2), seal.ErrCorrupt},
		{"private: last byte", flip(nameAt - 3), seal.ErrCorrupt},
		// The SRK's name must be its public area's (version 2).
		{"SRK name", flip(nameAt + 10), seal.ErrCorrupt},
		{"SRK public area", flip(pcrAt + len(b.PCRs) + 2 + 20), seal.ErrCorrupt},
		// Both of another SRK: asked, the TPM names its own.
		{"another SRK", otherSRK(t, b), seal.ErrWrongKey},
		// The PCR list is not integrity-protected: a forged list differs
		// from the configured PCRs (and see below).
		{"PCR list", flip(pcrAt), seal.ErrPCRSelection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Unseal(context.Background(), tt.blob)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unseal = %x, %v; want %v", got, err, tt.want)
			}
			t.Logf("error: %v", err)
		})
	}
	// Forged to match a config that binds PCR 17: only the policy, which
	// the TPM computed over PCR 16, can tell, and it fails.
	if _, err := newSimSealer(t, 17).Unseal(context.Background(), flip(pcrAt)); !errors.Is(err, seal.ErrPCRChanged) {
		t.Errorf("PCR list forged to match the config: %v, want seal.ErrPCRChanged", err)
	}
	assertNothingLoaded(t, s)
}

// The sealed object must not be usable by password (or any HMAC session):
// UserWithAuth is off, whatever the PCR list.
func TestTPMNoPasswordBypass(t *testing.T) {
	for _, pcrs := range [][]int{nil, {16}} {
		t.Run("pcrs="+seal.FormatPCRs(pcrs), func(t *testing.T) {
			s := newSimSealer(t, pcrs...)
			b, _, err := decode(mustSeal(t, s, randomSecret(t)))
			if err != nil {
				t.Fatal(err)
			}
			tpm := simTPM(t)
			srk, err := readSRK(tpm)
			if err != nil || srk == nil {
				t.Fatalf("readSRK = %v, %v", srk, err)
			}
			load, err := tpm2.Load{
				ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
				InPrivate:    tpm2.TPM2BPrivate{Buffer: b.Private},
				InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public),
			}.Execute(tpm)
			if err != nil {
				t.Fatal(err)
			}
			defer flushContext(tpm, load.ObjectHandle)

			// Each way in is refused for its own reason: with UserWithAuth
			// off the authValue is not available at all, and a policy
			// session that skipped PolicyPCR has the wrong digest.
			auths := map[string]struct {
				auth tpm2.Session
				want error
			}{
				"empty password":      {tpm2.PasswordAuth(nil), tpm2.TPMRCAuthUnavailable},
				"HMAC session":        {tpm2.HMAC(tpm2.TPMAlgSHA256, 16), tpm2.TPMRCAuthUnavailable},
				"bare policy session": {tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(transport.TPM, tpm2.TPMISHPolicy, tpm2.TPM2BNonce) error { return nil }), tpm2.TPMRCPolicyFail},
			}
			for name, a := range auths {
				rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: load.ObjectHandle, Name: load.Name, Auth: a.auth}}.Execute(tpm)
				if err == nil {
					t.Errorf("%s: Unseal succeeded (%d bytes)", name, len(rsp.OutData.Buffer))
					continue
				}
				if !errors.Is(err, a.want) {
					t.Errorf("%s: Unseal = %v, want %v", name, err, a.want)
				}
			}
		})
	}
	assertNothingLoaded(t, newSimSealer(t))
}

// flakyTPM answers rc (without running the command) to the commands
// whose sequence number rc returns non-zero for.
type flakyTPM struct {
	transport.TPM
	n  *int
	rc func(n int) tpm2.TPMRC
}

func (f flakyTPM) Send(cmd []byte) ([]byte, error) {
	*f.n++
	if rc := f.rc(*f.n); rc != 0 {
		rsp := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(rsp[6:], uint32(rc))
		return rsp, nil
	}
	return f.TPM.Send(cmd)
}

func (flakyTPM) Close() error { return nil }

func newFlakySealer(t *testing.T, rc func(n int) tpm2.TPMRC) *TPM {
	var n int
	return newSealer(t, Options{PCRs: []int{16}, Open: func() (transport.TPMCloser, error) {
		return flakyTPM{TPM: simTPM(t), n: &n, rc: rc}, nil
	}})
}

func TestTPMRetries(t *testing.T) {
	pt := randomSecret(t)
	blob := mustSeal(t, newSimSealer(t, 16), pt)
	// Each warning, on any command of the exchange (FlushContext included),
	// is answered by sending the command again.
	for _, rc := range []tpm2.TPMRC{tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting} {
		for i := 1; i <= 12; i++ {
			s := newFlakySealer(t, func(n int) tpm2.TPMRC {
				if n == i || n == i+1 {
					return rc
				}
				return 0
			})
			wantUnseal(t, s, blob, pt)
			wantUnseal(t, s, mustSeal(t, s, pt), pt)
		}
	}
	assertNothingLoaded(t, newSimSealer(t))

	// TPM_RC_PCR_CHANGED on Unseal redoes the exchange: the fourth command
	// (Load, StartAuthSession, PolicyPCR, Unseal), then the session's and
	// the object's flushes, then the tenth.
	s := newFlakySealer(t, func(n int) tpm2.TPMRC {
		if n == 4 || n == 10 {
			return tpm2.TPMRCPCRChanged
		}
		return 0
	})
	wantUnseal(t, s, blob, pt)
	assertNothingLoaded(t, s)

	// Retries are bounded.
	s = newFlakySealer(t, func(int) tpm2.TPMRC { return tpm2.TPMRCRetry })
	start := time.Now()
	if _, err := s.Unseal(context.Background(), blob); !errors.Is(err, tpm2.TPMRCRetry) {
		t.Fatalf("Unseal against a TPM that always says retry = %v", err)
	}
	t.Logf("gave up after %v", time.Since(start).Round(time.Millisecond))
}

func TestTPMLockFile(t *testing.T) {
	s := newSimSealer(t)
	f, err := os.OpenFile(s.opts.LockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Seal(ctx, randomSecret(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Seal while the lock is held = %v, want a deadline error", err)
	}

	// Released while a call waits: the call goes on.
	released := make(chan error)
	go func() {
		time.Sleep(20 * time.Millisecond)
		released <- unix.Flock(fd, unix.LOCK_UN)
	}()
	start := time.Now()
	pt := randomSecret(t)
	wantUnseal(t, s, mustSeal(t, s, pt), pt)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Errorf("Seal returned after %v, before the lock was released", waited)
	}

	fi, err := os.Stat(s.opts.LockPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, mode %v; want 0600", err, fi.Mode())
	}
}

func TestTPMUnreachable(t *testing.T) {
	dir := t.TempDir()
	// A socket file nobody listens on: connect says ECONNREFUSED.
	dead := filepath.Join(dir, "dead.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: dead}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct{ path, want string }{
		{"unix:" + dead, "tpm: open unix:" + dead + ": connection refused; is swtpm/the TPM running? check [tpm] path in the config"},
		{"unix:" + filepath.Join(dir, "missing"), "no such file or directory; is swtpm"},
		{"tcp:127.0.0.1:1", "tpm: open tcp:127.0.0.1:1: connection refused; is swtpm"},
		{filepath.Join(dir, "tpmrm0"), "no such file or directory; is swtpm"},
		{regular, "not a device"},
	}
	for _, tt := range tests {
		s, err := New(Options{Path: tt.path})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Unseal(context.Background(), mustSeal(t, newSimSealer(t), randomSecret(t)))
		if !errors.Is(err, tpmconn.ErrUnreachable) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Unseal via %s = %v; want ErrUnreachable and %q", tt.path, err, tt.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func TestNewTPMOptions(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without a path succeeded")
	}
	for _, pcr := range []int{-1, 24} {
		if _, err := New(Options{Path: "/dev/tpmrm0", PCRs: []int{pcr}}); err == nil {
			t.Errorf("New with PCR %d succeeded", pcr)
		}
	}
	s, err := New(Options{Path: "/dev/tpmrm0", PCRs: []int{16, 7, 16}})
	if err != nil || seal.FormatPCRs(s.opts.PCRs) != "7,16" {
		t.Errorf("New PCRs = %v, %v; want 7,16", s.opts.PCRs, err)
	}
	if s.Name() != "tpm" {
		t.Errorf("Name = %q", s.Name())
	}
}

func BenchmarkTPMSeal(b *testing.B) {
	s := newSimSealer(b, 7)
	pt := randomSecret(b)
	mustSeal(b, s, pt) // SRK creation is not what we measure
	for b.Loop() {
		mustSeal(b, s, pt)
	}
}

func BenchmarkTPMUnseal(b *testing.B) {
	s := newSimSealer(b, 7)
	pt := randomSecret(b)
	blob := mustSeal(b, s, pt)
	for b.Loop() {
		wantUnseal(b, s, blob, pt)
	}
}

// interposer forwards commands to a TPM but answers ReadPublic of the SRK
// handle with the public area of another key, as something between
// northstar and the TPM (a fake socket at a unix: path) would, and records
// the command codes it saw.
type interposer struct {
	transport.TPM
	fake []byte // a whole ReadPublic response for another key
	sent []tpm2.TPMCC
}

func (i *interposer) Send(cmd []byte) ([]byte, error) {
	cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
	i.sent = append(i.sent, cc)
	if cc == tpm2.TPMCCReadPublic && tpm2.TPMHandle(binary.BigEndian.Uint32(cmd[10:14])) == SRKHandle {
		return i.fake, nil
	}
	return i.TPM.Send(cmd)
}

func (*interposer) Close() error { return nil }

// recorder keeps the last response it passed on.
type recorder struct {
	transport.TPM
	last []byte
}

func (r *recorder) Send(cmd []byte) ([]byte, error) {
	rsp, err := r.TPM.Send(cmd)
	r.last = bytes.Clone(rsp)
	return rsp, err
}

// TestTPMSealPinnedRefusesAnotherSRK: once a secret exists, a new one is
// sealed only under the SRK the current one was sealed under. An
// interposer that substitutes its own key for the SRK's public area gets
// an seal.ErrSRKChanged before TPM2_Create, so the new secret never travels
// encrypted to its key (issue 9, point 2).
func TestTPMSealPinnedRefusesAnotherSRK(t *testing.T) {
	tpm := simTPM(t)
	s := newSimSealer(t)
	prev := mustSeal(t, s, randomSecret(t)) // under the real SRK

	// Another key made from the SRK template (another unique value), as
	// an impostor would present it.
	tmpl := tpm2.ECCSRKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{7}, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{7}, 32)},
	})
	other, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{TPM: tpm}
	_, err = tpm2.ReadPublic{ObjectHandle: other.ObjectHandle}.Execute(rec)
	flushContext(tpm, other.ObjectHandle)
	if err != nil {
		t.Fatal(err)
	}

	i := &interposer{TPM: tpm, fake: rec.last}
	mitm := newSealer(t, Options{Open: func() (transport.TPMCloser, error) { return i, nil }})
	_, err = mitm.SealPinned(context.Background(), randomSecret(t), prev)
	if !errors.Is(err, seal.ErrSRKChanged) {
		t.Fatalf("SealPinned through an interposer = %v, want seal.ErrSRKChanged", err)
	}
	if slices.Contains(i.sent, tpm2.TPMCCCreate) {
		t.Errorf("TPM2_Create was sent under the substituted key: %v", i.sent)
	}
	t.Logf("refused: %v", err)

	// Without the interposer the pinned seal goes through, and a blob of
	// a cleared TPM's new SRK is what --new-srk (plain Seal) makes.
	pt := randomSecret(t)
	wantUnseal(t, s, mustSealPinned(t, s, pt, prev), pt)
	assertNothingLoaded(t, s)
}

func mustSealPinned(tb testing.TB, s *TPM, pt, prev []byte) []byte {
	tb.Helper()
	blob, err := s.SealPinned(context.Background(), pt, prev)
	if err != nil {
		tb.Fatalf("SealPinned: %v", err)
	}
	return blob
}

// commandLog forwards commands to a TPM and records their codes.
type commandLog struct {
	transport.TPM
	sent []tpm2.TPMCC
}

func (c *commandLog) Send(cmd []byte) ([]byte, error) {
	c.sent = append(c.sent, tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])))
	return c.TPM.Send(cmd)
}

func (*commandLog) Close() error { return nil }

// TestTPMUnsealCommands: a blob that carries its SRK's public area unseals
// in five commands, each a round trip of 20-200 ms on a discrete TPM: no
// ReadPublic (the salt is encrypted to the key from the blob), and the
// policy session ends with the Unseal that uses it (no flush of its own).
// A blob of the format before (version 1) still unseals, asking the TPM
// for its SRK first.
func TestTPMUnsealCommands(t *testing.T) {
	pt := randomSecret(t)
	blob := mustSeal(t, newSimSealer(t, 16), pt)
	log := &commandLog{TPM: simTPM(t)}
	s := newSealer(t, Options{PCRs: []int{16}, Open: func() (transport.TPMCloser, error) { return log, nil }})
	wantUnseal(t, s, blob, pt)
	want := []tpm2.TPMCC{tpm2.TPMCCLoad, tpm2.TPMCCStartAuthSession, tpm2.TPMCCPolicyPCR, tpm2.TPMCCUnseal, tpm2.TPMCCFlushContext}
	if !slices.Equal(log.sent, want) {
		t.Errorf("unseal sent %v, want %v", log.sent, want)
	}

	b, _, err := decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	b.SRKPublic = nil
	log.sent = nil
	wantUnseal(t, s, b.Encode(), pt)
	if len(log.sent) == 0 || log.sent[0] != tpm2.TPMCCReadPublic || len(log.sent) != len(want)+1 {
		t.Errorf("a version 1 blob: unseal sent %v, want ReadPublic and then %v", log.sent, want)
	}
	assertNothingLoaded(t, s)
}

// TestTPMTimeoutNamed: a socket TPM that accepts and never answers fails
// each call after [tpm] timeout with an error naming the TPM and the
// setting, every time. The connection's deadline and the context's timer
// fire at the same instant; which one the caller sees first must not
// change the message (CI saw "write unix …: i/o timeout" bare).
func TestTPMTimeoutNamed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "stuck.sock")
	testenv.NeverAnswers(t, sock)
	blob := mustSeal(t, newSimSealer(t), randomSecret(t))
	for _, timeout := range []time.Duration{time.Nanosecond, time.Microsecond, 50 * time.Microsecond, time.Millisecond} {
		s, err := New(Options{Path: "unix:" + sock, Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		want := "tpm unix:" + sock + ": gave up after " + timeout.String() + " ([tpm] timeout)"
		for range 100 {
			_, err := s.Unseal(context.Background(), blob)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Unseal with a %v timeout = %v; want %q", timeout, err, want)
			}
		}
	}
}
