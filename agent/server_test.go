package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

func hostStore(dir string) *store.Store {
	return store.New(dir, seal.NewHost(filepath.Join(dir, seal.HostKeyFile)))
}

// TestFetchCurrentMatchesTheBlob: an agent still holding generation 1 of a
// state dir that was wiped and initialised again (so generation 1 again,
// another secret) must not be used: FetchCurrent compares the sealed
// blob's digest, not the generation (issue 9, point 4).
func TestFetchCurrentMatchesTheBlob(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	st := hostStore(dir)
	old, _, err := st.Init(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	sec, _, err := st.Secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	memfd, err := secretfs.NewSecretMemfd("test", sec)
	if err != nil {
		t.Fatal(err)
	}
	defer memfd.Close()
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	serve(t, sock, func() (*os.File, RecordID, error) {
		f, _, err := dupSource(memfd, 0)()
		return f, IDOf(old), err
	})

	f, err := FetchCurrent(ctx, sock, st)
	if err != nil {
		t.Fatalf("FetchCurrent of the current secret: %v", err)
	}
	f.Close()

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	renewed, _, err := st.Init(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Generation != old.Generation {
		t.Fatalf("test premise: generation %d after wipe and init, want %d again", renewed.Generation, old.Generation)
	}
	if f, err := FetchCurrent(ctx, sock, st); err == nil {
		f.Close()
		t.Fatal("FetchCurrent took the wiped state's secret: same generation, another blob")
	} else if !strings.Contains(err.Error(), "agent serves generation 1") {
		t.Errorf("FetchCurrent error %q does not say what the agent serves", err)
	}
}

// TestRunFollowsANewBlobOfTheSameGeneration: the agent reloads when the
// record's blob changes even though its generation does not.
func TestRunFollowsANewBlobOfTheSameGeneration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "state")
	st := hostStore(dir)
	if _, _, err := st.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{Socket: sock, Store: st, Unseal: InProcess(st), Log: nopWriter{}}) }()
	defer func() { cancel(); <-done }()
	waitCurrent := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			f, err := FetchCurrent(ctx, sock, st)
			if err == nil {
				f.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent does not serve the stored secret: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCurrent()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	waitCurrent()
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
