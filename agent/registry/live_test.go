// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

// storeSecret is the agent's held secret as the registry sees it, read
// from the store: Held is what the last hold put there, as the agent's is
// what its last load unsealed.
type storeSecret struct {
	st *store.Store
	mu sync.Mutex
	id control.RecordID
	b  []byte
}

func (s *storeSecret) hold(t *testing.T) (id, prev control.RecordID) {
	t.Helper()
	rec, err := s.st.Current()
	if err != nil {
		t.Fatal(err)
	}
	sec, _, err := s.st.Secret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, s.id, s.b = s.id, control.IDOf(rec), sec.AppendHex(nil)
	return s.id, prev
}

func (s *storeSecret) Current(context.Context) (*os.File, control.RecordID, error) { return s.Held() }

func (s *storeSecret) Held() (*os.File, control.RecordID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := secretfs.NewSealedMemfd("test", s.b)
	return f, s.id, err
}

// liveRegistry is a registry with live rotation (no API) over a host-sealed
// store, and the secret it holds.
func liveRegistry(t *testing.T, grace time.Duration) (*Containers, *storeSecret) {
	t.Helper()
	testenv.RequireRoot(t, "the secret's filesystems are mounts")
	dir := t.TempDir()
	st := hostStore(t, dir)
	sec := &storeSecret{st: st}
	sec.hold(t)
	c, err := Open(context.Background(), Options{Store: st, Dir: filepath.Join(dir, "containers"), Live: true, Secret: sec, Grace: grace},
		func() uint64 { sec.mu.Lock(); defer sec.mu.Unlock(); return sec.id.Generation })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.isClosed() {
			c.Close()
		}
	})
	return c, sec
}

// deliver registers id for a new process with its secret delivered by the
// agent, as the hook does; it returns the view the container would mount.
func deliver(t *testing.T, c *Containers, id string) (*os.File, control.Registration) {
	t.Helper()
	r, pidfd := registrationOf(t, id, id, sleeper(t))
	defer pidfd.Close()
	reply, err := c.Register(control.Request{Registration: r, Secret: &control.Owner{Mode: 0o400}}, pidfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reply.View.Close() })
	return reply.View, r
}

// readIn reads name in a container's view ("" when it is not there).
func readIn(t *testing.T, view *os.File, name string) string {
	t.Helper()
	fd, err := unix.Openat(int(view.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b := make([]byte, 128)
	n, _ := f.Read(b)
	return string(b[:n])
}

func entryOf(c *Containers, r control.Registration) Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byKey[r].Entry
}

// TestRevokeReachesPastANewerRecord: `rotate --revoke rogue` and a plain
// rotate right after it, both before the agent runs the first rotation:
// rogue is cut off all the same (the newer record carries the revocation),
// and nobody keeps the secret before, which rogue knew.
func TestRevokeReachesPastANewerRecord(t *testing.T) {
	c, sec := liveRegistry(t, time.Hour)
	ctx := context.Background()
	rogueView, rogue := deliver(t, c, "rogue")
	okView, ok := deliver(t, c, "ok")
	first := readIn(t, okView, secretfs.File)
	if first == "" || readIn(t, rogueView, secretfs.File) != first {
		t.Fatal("the two containers were not delivered one secret")
	}
	if _, err := sec.st.Rotate(ctx, "rogue"); err != nil {
		t.Fatal(err)
	}
	id, prev := sec.hold(t)
	if _, err := sec.st.Rotate(ctx); err != nil { // the store moves on
		t.Fatal(err)
	}
	c.Rotated(id, prev)
	if got := readIn(t, rogueView, secretfs.File); got != "" {
		t.Errorf("rogue still reads a secret after its revocation")
	}
	if e := entryOf(c, rogue); !e.Revoked {
		t.Errorf("rogue is not listed as revoked: %+v", e)
	}
	if got := readIn(t, okView, secretfs.File); got == "" || got == first {
		t.Errorf("the other container did not get the new secret")
	}
	if got := readIn(t, okView, secretfs.PreviousFile); got != "" {
		t.Errorf("the other container keeps the secret rogue knew as %s", secretfs.PreviousFile)
	}
	if e := entryOf(c, ok); e.Generation != id.Generation || e.holds() != id {
		t.Errorf("the other container is listed at %d (%s), want %d", e.Generation, e.Digest, id.Generation)
	}
}

// TestRevokeBeforeTheLoad: Revoke (which the agent runs before it serves a
// revoking record's generation) cuts the container off at once, and a
// later plain rotation keeps the one before for everyone again.
func TestRevokeBeforeTheLoad(t *testing.T) {
	c, sec := liveRegistry(t, time.Hour)
	ctx := context.Background()
	rogueView, rogue := deliver(t, c, "rogue")
	okView, _ := deliver(t, c, "ok")
	rec, err := sec.st.Rotate(ctx, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	c.Revoke(rec.Revoked)
	if readIn(t, rogueView, secretfs.File) != "" || !entryOf(c, rogue).Revoked {
		t.Fatal("Revoke left rogue its secret")
	}
	c.Rotated(sec.hold(t))
	if _, err := sec.st.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	before := readIn(t, okView, secretfs.File)
	c.Rotated(sec.hold(t))
	if got := readIn(t, okView, secretfs.PreviousFile); got != before {
		t.Errorf("after a rotation that revokes nobody new, %s is %q, want the one before", secretfs.PreviousFile, got)
	}
}

// TestDeclinedDelivery: a hook that did not take the agent's delivery
// (registering again without the secret) is not listed as following.
func TestDeclinedDelivery(t *testing.T) {
	c, _ := liveRegistry(t, 0)
	_, r := deliver(t, c, "declined")
	fd, err := unix.PidfdOpen(r.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()
	if _, err := c.Register(control.Request{Registration: r}, pidfd); err != nil {
		t.Fatal(err)
	}
	if e := entryOf(c, r); e.Follows || !strings.Contains(e.Why, "hook built") {
		t.Errorf("a declined delivery is listed as %+v", e)
	}
}

// TestClosedRegistryKeepsTheFile: a rotation that runs into Close (the
// agent's watch is not joined) neither delivers nor saves the emptied
// list over the next agent's registry.json.
func TestClosedRegistryKeepsTheFile(t *testing.T) {
	c, sec := liveRegistry(t, time.Minute)
	deliver(t, c, "one")
	if _, err := sec.st.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Rotated(sec.hold(t)) // keeps secret.previous: a drop time to save
	saved, err := readSaved(c.dir)
	if err != nil || len(saved.Containers) != 1 || saved.DropPreviousAt.IsZero() {
		t.Fatalf("registry.json before Close: %+v, %v", saved, err)
	}
	c.Close()
	if err := c.save(); err == nil {
		t.Error("save after Close succeeded")
	}
	c.Rotated(sec.hold(t))
	if again, err := readSaved(c.dir); err != nil || len(again.Containers) != 1 {
		t.Errorf("registry.json after Close: %+v, %v", again, err)
	}
}
