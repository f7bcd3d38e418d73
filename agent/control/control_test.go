// SPDX-License-Identifier: Apache-2.0

package control

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/store"
)

const testHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// TestMain doubles as the helper process of TestPeerWithOtherUIDRefused:
// with AGENT_TEST_FETCH set it only runs Fetch and reports by exit code.
func TestMain(m *testing.M) {
	if p := os.Getenv("AGENT_TEST_FETCH"); p != "" {
		f, _, err := Fetch(context.Background(), p)
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(3)
		}
		f.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func sealed(t *testing.T, content string) *os.File {
	t.Helper()
	f, err := secretfs.NewSealedMemfd("test", []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// dupSource serves a duplicate of f, as a Source must.
func dupSource(f *os.File, gen uint64) Source {
	return func() (*os.File, RecordID, error) {
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, RecordID{}, err
		}
		return os.NewFile(uintptr(fd), f.Name()), RecordID{Generation: gen, BlobDigest: [32]byte{byte(gen)}}, nil
	}
}

func serve(t *testing.T, sock string, src Source) {
	t.Helper()
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, src, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind after Serve: %v", err)
		}
	})
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agent")
	sock := filepath.Join(dir, "agent.sock")
	serve(t, sock, dupSource(sealed(t, testHex), 42))

	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("agent directory: %v, %v", fi.Mode(), err)
	}
	for i := 0; i < 3; i++ {
		f, id, err := Fetch(context.Background(), sock)
		if err != nil {
			t.Fatal(err)
		}
		got, err := secretfs.ReadMemfd(f)
		f.Close()
		if err != nil || string(got) != testHex || id != (RecordID{Generation: 42, BlobDigest: [32]byte{42}}) {
			t.Fatalf("Fetch: record %+v, content ok %v, %v", id, string(got) == testHex, err)
		}
	}
}

func TestFetchWithoutAgent(t *testing.T) {
	start := time.Now()
	if _, _, err := Fetch(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("Fetch without an agent succeeded")
	}
	if d := time.Since(start); d > FetchTimeout {
		t.Errorf("Fetch without an agent took %v", d)
	}
}

// fakeServer accepts one connection, reads its request and sends msg with
// fds attached.
func fakeServer(t *testing.T, msg []byte, fds ...int) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: sock, Net: network})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		req := make([]byte, maxRequest)
		_, _ = c.Read(req) // the client's request, as the real agent reads it
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		_, _, _ = c.WriteMsgUnix(msg, oob, nil)
	}()
	return sock
}

func genMsg(gen uint64) []byte {
	return RecordID{Generation: gen}.marshal()
}

func TestFetchRefuses(t *testing.T) {
	unsealedFd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	unsealed := os.NewFile(uintptr(unsealedFd), "unsealed")
	defer unsealed.Close()
	if _, err := unsealed.Write([]byte(testHex)); err != nil {
		t.Fatal(err)
	}
	good := sealed(t, testHex)
	for name, c := range map[string]struct {
		msg  []byte
		fds  []int
		want string
	}{
		"unsealed memfd":  {genMsg(1), []int{unsealedFd}, "not sealed"},
		"not hex":         {genMsg(1), []int{int(sealed(t, strings.ToUpper(testHex)).Fd())}, "not lowercase hex"},
		"short":           {genMsg(1), []int{int(sealed(t, testHex[:10]).Fd())}, "want 64"},
		"no fd":           {genMsg(1), nil, "0 fds"},
		"two fds":         {genMsg(1), []int{int(good.Fd()), int(good.Fd())}, "2 fds"},
		"long message":    {append(genMsg(1), 0), []int{int(good.Fd())}, "41 bytes"},
		"generation only": {genMsg(1)[:8], []int{int(good.Fd())}, "8 bytes"},
		"short message":   {[]byte{1}, []int{int(good.Fd())}, "1 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			f, _, err := Fetch(context.Background(), fakeServer(t, c.msg, c.fds...))
			if err == nil {
				f.Close()
				t.Fatal("Fetch accepted it")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Fetch: %v, want an error containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), testHex[:16]) {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}

func TestFetchClosesRefusedFds(t *testing.T) {
	good := sealed(t, testHex)
	before := openMemfds(t)
	for i := 0; i < 5; i++ {
		if _, _, err := Fetch(context.Background(), fakeServer(t, genMsg(1), int(good.Fd()), int(good.Fd()))); err == nil {
			t.Fatal("two fds accepted")
		}
	}
	// Let the fake servers finish (they close only their connection).
	time.Sleep(20 * time.Millisecond)
	if after := openMemfds(t); after != before {
		t.Errorf("open memfds went from %d to %d: refused fds are not closed", before, after)
	}
}

// openMemfds counts this process's fds on memfds.
func openMemfds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "/memfd:") {
			n++
		}
	}
	return n
}

func TestListenRefusesLooseDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agent")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(dir, "a.sock")); err == nil || !strings.Contains(err.Error(), "want 0700") {
		t.Errorf("Listen in a 0755 directory: %v", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(link, "a.sock")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Listen through a symlinked directory: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(filepath.Join(dir, "a.sock")); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("Listen in another user's directory: %v", err)
		}
	}
}

// TestPeerWithOtherUIDRefused: a client running as another uid that reaches
// the socket (here the directory is opened up on purpose) gets no fd.
func TestPeerWithOtherUIDRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	sock := filepath.Join(dir, "agent.sock")
	serve(t, sock, dupSource(sealed(t, testHex), 7))
	// Open the path so that only SO_PEERCRED stands in the way.
	for p := dir; p != "/"; p = filepath.Dir(p) {
		if strings.HasPrefix(p, os.TempDir()) && p != os.TempDir() {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	// The test binary must be reachable by nobody; copy it next to the socket.
	bin := filepath.Join(filepath.Dir(dir), "agent.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	fetch := func(uid uint32) (string, error) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"AGENT_TEST_FETCH=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := fetch(0); err != nil {
		t.Fatalf("helper as root could not fetch: %v\n%s", err, out)
	}
	out, err := fetch(65534)
	if err == nil {
		t.Fatal("a client with uid 65534 received the memfd")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("helper as uid 65534: %v\n%s", err, out)
	}
}

// TestPeerInAnotherMountNamespaceRefused: root in another mount namespace
// (a container without a user namespace, say) is uid 0 like the hook, and
// is refused all the same (issue 9, point 5); the same process in the
// agent's namespace gets the memfd.
func TestPeerInAnotherMountNamespaceRefused(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent", "agent.sock")
	serve(t, sock, dupSource(sealed(t, testHex), 7))
	fetch := func(args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = []string{"AGENT_TEST_FETCH=" + sock}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := fetch(exe); err != nil {
		t.Fatalf("helper in the agent's mount namespace could not fetch: %v\n%s", err, out)
	}
	out, err := fetch("unshare", "--mount", "--propagation", "unchanged", exe)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("helper in another mount namespace: %v, want refused (exit 3)\n%s", err, out)
	}
}

// TestCheckPeerSupport: this kernel (6.11+) tells a peer's mount
// namespace; on an older one the check says which feature is missing.
func TestCheckPeerSupport(t *testing.T) {
	if err := CheckPeerSupport(); err != nil {
		t.Fatalf("CheckPeerSupport on this kernel: %v", err)
	}
}

// TestFetchCurrentMatchesTheBlob: an agent still holding generation 1 of a
// state dir that was wiped and initialised again (so generation 1 again,
// another secret) must not be used: FetchCurrent compares the sealed
// blob's digest, not the generation (issue 9, point 4).
func TestFetchCurrentMatchesTheBlob(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	st := store.New(dir, seal.NewHost(filepath.Join(dir, seal.HostKeyFile)))
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
	// Closed after Serve stops (cleanups run last first), which may still
	// be answering a connection when the test's body returns.
	t.Cleanup(func() { memfd.Close() })
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

// TestValidContainerIDMatchesTheRule: the loop judges every byte value,
// first and later, and the length bounds, as the rule's expression does.
func TestValidContainerIDMatchesTheRule(t *testing.T) {
	rule := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	for c := 0; c < 256; c++ {
		b := string([]byte{byte(c)})
		for _, s := range []string{b, "a" + b, b + "a", strings.Repeat("a", 127) + b, strings.Repeat("a", 128) + b} {
			if got, want := validContainerID(s), rule.MatchString(s); got != want {
				t.Fatalf("validContainerID(%d bytes around %#x) = %v, the rule says %v", len(s), c, got, want)
			}
		}
	}
	if validContainerID("") {
		t.Error("the empty id passed")
	}
}
