// SPDX-License-Identifier: Apache-2.0

package measure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// The in-process reference TPM (one per process); each test uses an NV
// index of its own.
var sim struct {
	once sync.Once
	tpm  transport.TPMCloser
	err  error
	// hold, while locked, blocks every command (a TPM that is busy).
	hold  sync.Mutex
	sends atomic.Int64
}

type heldTPM struct{ transport.TPM }

func (h heldTPM) Send(cmd []byte) ([]byte, error) {
	sim.hold.Lock()
	defer sim.hold.Unlock()
	sim.sends.Add(1)
	return h.TPM.Send(cmd)
}
func (heldTPM) Close() error { return nil }

var nextIndex atomic.Uint32

func testOptions(t *testing.T) Options {
	t.Helper()
	sim.once.Do(func() { sim.tpm, sim.err = simulator.OpenSimulator() })
	if sim.err != nil {
		t.Fatalf("start TPM simulator: %v", sim.err)
	}
	return Options{
		TPM: tpmconn.Options{LockPath: filepath.Join(t.TempDir(), "tpm.lock"),
			Open: func() (transport.TPMCloser, error) { return heldTPM{sim.tpm}, nil }},
		Index:    containerlog.DefaultIndex + 0x100 + nextIndex.Add(1),
		Auth:     bytes.Repeat([]byte{0x5a}, AuthSize),
		Path:     filepath.Join(t.TempDir(), FileName),
		Interval: 10 * time.Millisecond,
	}
}

func open(t *testing.T, opts Options) *Log {
	t.Helper()
	l, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func event(i int) containerlog.Event {
	return containerlog.Event{ID: fmt.Sprintf("c%d", i), Identity: fmt.Sprintf("id%d", i), Via: "hook",
		Config: sha256.Sum256([]byte{byte(i)}), Rootfs: "ext4 dev=8:1 ino=2"}
}

// indexValue reads the index as a verifier's certification would see it.
func indexValue(t *testing.T, opts Options) [sha256.Size]byte {
	t.Helper()
	var v [sha256.Size]byte
	err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
		_, name, err := readPublic(tpm, opts.Index)
		if err != nil {
			return err
		}
		v, err = read(tpm, opts.Index, name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func replayFile(t *testing.T, opts Options) *containerlog.Replayed {
	t.Helper()
	b, err := os.ReadFile(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := containerlog.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := containerlog.Replay(recs, opts.Index)
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// TestLogFollowsIndex: deliveries appended from many goroutines are
// extended in batches (fewer extends than deliveries), the log replays to
// the index's value, and a restarted agent finds them consistent and goes
// on.
func TestLogFollowsIndex(t *testing.T) {
	opts := testOptions(t)
	l := open(t, opts)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Append(event(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	rp := replayFile(t, opts)
	if len(rp.Events) != 40 || len(rp.Pending) != 0 {
		t.Fatalf("the log has %d events, %d pending; want 40, 0", len(rp.Events), len(rp.Pending))
	}
	if rp.Batches >= 40 || l.Extended() != rp.Batches {
		t.Fatalf("%d batches, %d extends for 40 deliveries: not batched", rp.Batches, l.Extended())
	}
	if v := indexValue(t, opts); v != rp.Value {
		t.Fatalf("the index holds %x, the log replays to %x", v, rp.Value)
	}
	l.Close()

	// A restart: consistent, and it goes on from there.
	l = open(t, opts)
	if err := l.Append(event(40)); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if rp := replayFile(t, opts); len(rp.Events) != 41 || indexValue(t, opts) != rp.Value {
		t.Fatalf("after a restart: %d events, the index does not hold the replay", len(rp.Events))
	}
}

// TestAppendDoesNotWaitForTheTPM: with the TPM busy (every command held),
// deliveries are appended at once; the batch is extended when the TPM
// answers again.
func TestAppendDoesNotWaitForTheTPM(t *testing.T) {
	opts := testOptions(t)
	l := open(t, opts)
	sim.hold.Lock()
	held := true
	defer func() {
		if held {
			sim.hold.Unlock()
		}
	}()
	done := make(chan error)
	go func() {
		for i := range 20 {
			if err := l.Append(event(i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Append waited for the TPM")
	}
	sim.hold.Unlock()
	held = false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if rp := replayFile(t, opts); len(rp.Events) != 20 || indexValue(t, opts) != rp.Value {
		t.Fatalf("%d events; the index does not hold the replay", len(rp.Events))
	}
}

// TestOthersCannotExtend: without the index's authValue neither a process
// with a wrong one nor the owner can extend it; the TPM refuses.
func TestOthersCannotExtend(t *testing.T) {
	opts := testOptions(t)
	open(t, opts).Close()
	before := indexValue(t, opts)
	err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
		return Extend(tpm, opts.Index, bytes.Repeat([]byte{1}, AuthSize), make([]byte, 32))
	})
	// TPM_RC_BAD_AUTH: NO_DA, so no lockout either.
	if !errors.Is(err, tpm2.TPMRCBadAuth) || !strings.Contains(err.Error(), "tpm2_nvundefine") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("an extend with another auth: %v, want TPM_RC_BAD_AUTH naming the fix in one line", err)
	}
	// The owner (empty owner auth, as on most hosts) may not write it either.
	err = tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
		_, name, err := readPublic(tpm, opts.Index)
		if err != nil {
			return err
		}
		_, err = tpm2.NVWrite{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(opts.Index), Name: *name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: make([]byte, 32)},
		}.Execute(tpm)
		return err
	})
	if !errors.Is(err, tpm2.TPMRCNVAuthorization) && !errors.Is(err, tpm2.TPMRCAttributes) {
		t.Fatalf("a write with owner auth: %v, want TPM_RC_NV_AUTHORIZATION", err)
	}
	if v := indexValue(t, opts); v != before {
		t.Fatalf("the index moved: %x", v)
	}
}

// TestRestartChecksTheIndex: an index extended behind the agent's back,
// or redefined, is a one-line refusal naming the fix; a batch written but
// not extended (the agent died in between) is extended at the restart.
func TestRestartChecksTheIndex(t *testing.T) {
	t.Run("extended by another", func(t *testing.T) {
		opts := testOptions(t)
		l := open(t, opts)
		if err := l.Append(event(1)); err != nil {
			t.Fatal(err)
		}
		l.Close()
		// Someone holding the auth (host root that read the agent's key).
		if err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
			return Extend(tpm, opts.Index, opts.Auth, make([]byte, 32))
		}); err != nil {
			t.Fatal(err)
		}
		_, err := Open(context.Background(), opts)
		if err == nil || !strings.Contains(err.Error(), "holds") || !strings.Contains(err.Error(), "tpm2_nvundefine") ||
			strings.Contains(err.Error(), "\n") {
			t.Fatalf("open: %v", err)
		}
	})
	t.Run("redefined", func(t *testing.T) {
		opts := testOptions(t)
		l := open(t, opts)
		if err := l.Append(event(1)); err != nil {
			t.Fatal(err)
		}
		l.Close()
		if err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
			_, name, err := readPublic(tpm, opts.Index)
			if err != nil {
				return err
			}
			_, err = tpm2.NVUndefineSpace{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
				NVIndex: tpm2.NamedHandle{Handle: tpm2.TPMHandle(opts.Index), Name: *name}}.Execute(tpm)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		_, err := Open(context.Background(), opts)
		if err == nil || !strings.Contains(err.Error(), "is not defined") {
			t.Fatalf("open: %v", err)
		}
	})
	t.Run("defined, no first batch", func(t *testing.T) {
		opts := testOptions(t)
		if err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
			return define(tpm, opts.Index, opts.Auth)
		}); err != nil {
			t.Fatal(err)
		}
		open(t, opts).Close()
		if rp := replayFile(t, opts); indexValue(t, opts) != rp.Value || rp.Batches != 1 {
			t.Fatal("the first batch was not written and extended")
		}
	})
	t.Run("a log and no index", func(t *testing.T) {
		opts := testOptions(t)
		recs := []containerlog.Record{containerlog.Batch(0, opts.Index, nil)}
		if err := os.WriteFile(opts.Path, containerlog.Encode(recs), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "is not defined (the TPM was cleared") {
			t.Fatalf("open: %v", err)
		}
	})
	t.Run("batch not extended", func(t *testing.T) {
		opts := testOptions(t)
		open(t, opts).Close()
		// The first batch (empty, at the index's definition), then one
		// container and its batch, never extended.
		recs := []containerlog.Record{containerlog.Batch(0, opts.Index, nil), containerlog.Container(1, opts.Index, event(1))}
		recs = append(recs, containerlog.Batch(2, opts.Index, [][sha256.Size]byte{recs[1].Digest}))
		if err := os.WriteFile(opts.Path, containerlog.Encode(recs), 0o600); err != nil {
			t.Fatal(err)
		}
		open(t, opts).Close()
		if rp := replayFile(t, opts); indexValue(t, opts) != rp.Value || rp.Batches != 2 {
			t.Fatal("the unextended batch was not extended at the restart")
		}
	})
}

// recordingTPM keeps every command sent through it.
type recordingTPM struct {
	transport.TPM
	sent [][]byte
}

func (r *recordingTPM) Send(cmd []byte) ([]byte, error) {
	r.sent = append(r.sent, bytes.Clone(cmd))
	return r.TPM.Send(cmd)
}

// TestExtendKeepsTheAuthOffTheBus: the index's authValue never crosses
// the TPM's bus (an HMAC session proves it), and the extend still moves
// the index as an extend does.
func TestExtendKeepsTheAuthOffTheBus(t *testing.T) {
	opts := testOptions(t)
	opts.Auth = bytes.Repeat([]byte{0xa7}, AuthSize) // no run of it appears in a command by chance
	open(t, opts).Close()
	before := indexValue(t, opts)
	data := bytes.Repeat([]byte{0x42}, 32)
	var rec *recordingTPM
	err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
		rec = &recordingTPM{TPM: tpm}
		return Extend(rec, opts.Index, opts.Auth, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.sent) == 0 {
		t.Fatal("no command recorded")
	}
	for i, cmd := range rec.sent {
		if bytes.Contains(cmd, opts.Auth) || bytes.Contains(cmd, indexAuth(opts.Auth)) {
			t.Fatalf("command %d (%#x) carries the authValue in clear", i, cmd[6:10])
		}
	}
	if got, want := indexValue(t, opts), containerlog.Extend(before, [32]byte(data)); got != want {
		t.Fatalf("index %x after the extend, want %x", got, want)
	}
}

// TestExtendWithZeroBytesInTheKey: a key with zero bytes inside and at
// its end (one random key in eight has one) defines and extends the index
// like any other; go-tpm's HMAC session would cut its authValue at the
// first zero and the TPM refuse every extend.
func TestExtendWithZeroBytesInTheKey(t *testing.T) {
	opts := testOptions(t)
	opts.Auth = bytes.Repeat([]byte{0x3c, 0x00, 0x91, 0x07}, AuthSize/4)
	opts.Auth[AuthSize-1] = 0
	l := open(t, opts)
	if err := l.Append(event(1)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := tpmconn.Converse(context.Background(), opts.TPM, func(tpm transport.TPM) error {
		return Extend(tpm, opts.Index, opts.Auth, make([]byte, 32))
	}); err != nil {
		t.Fatalf("an extend with the agent's own key: %v", err)
	}
}
