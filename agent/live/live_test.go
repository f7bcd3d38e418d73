// SPDX-License-Identifier: Apache-2.0

package live

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
)

var (
	gen1 = bytes.Repeat([]byte("1"), secretfs.HexSize)
	gen2 = bytes.Repeat([]byte("2"), secretfs.HexSize)
	gen3 = bytes.Repeat([]byte("3"), secretfs.HexSize)
)

// TestMain doubles as the container of these tests: with LIVE_TEST_CONTAINER
// set, the process makes a mount namespace of its own with a tmpfs at
// /run, moves the view it gets at fd 3 onto /run/northstar, and answers
// commands on stdin: "read NAME" prints the file (or ENOENT), "write"
// tries to create a file there, "replace" unmounts the view and mounts a
// tmpfs of its own in its place with a file "mine", "inside" moves the
// view and points /run/northstar at its api directory.
func TestMain(m *testing.M) {
	if os.Getenv("LIVE_TEST_CONTAINER") != "" {
		container()
		return
	}
	os.Exit(m.Run())
}

func container() {
	fail := func(err error) { fmt.Println("error", err); os.Exit(1) }
	// The mount namespace is the test's (startContainer) Unshareflags, made
	// for the whole process before exec: unshare(2) here would move only
	// the calling thread, and the agent's setns through the pidfd enters
	// the thread-group leader's namespace, which the Go scheduler need not
	// have run this on (Reacquire then found no /run/northstar, about one
	// run in three under load).
	if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		fail(err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "size=64k"); err != nil {
		fail(err)
	}
	if err := os.Mkdir(secretfs.Dir, 0o755); err != nil {
		fail(err)
	}
	d, err := unix.Open(secretfs.Dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		fail(err)
	}
	if err := unix.MoveMount(3, "", d, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		fail(err)
	}
	fmt.Println("ready")
	var cmd, arg string
	for {
		if _, err := fmt.Scanln(&cmd, &arg); err != nil {
			return
		}
		switch cmd {
		case "read":
			b, err := os.ReadFile(secretfs.Dir + "/" + arg)
			if err != nil {
				fmt.Println("error", errors.Unwrap(err))
			} else {
				fmt.Println("content", string(b))
			}
		case "write":
			fmt.Println("write", os.WriteFile(secretfs.Dir+"/x", nil, 0o644))
		case "replace":
			if err := unix.Unmount(secretfs.Dir, unix.MNT_DETACH); err != nil {
				fail(err)
			}
			if err := unix.Mount("tmpfs", secretfs.Dir, "tmpfs", 0, "size=64k"); err != nil {
				fail(err)
			}
			fmt.Println("replaced", os.WriteFile(secretfs.Dir+"/mine", []byte("mine"), 0o644))
		case "inside":
			// The view moves to /run/moved and /run/northstar becomes a
			// symlink to a directory inside it.
			if err := os.Mkdir("/run/moved", 0o755); err != nil {
				fail(err)
			}
			if err := unix.Mount(secretfs.Dir, "/run/moved", "", unix.MS_MOVE, ""); err != nil {
				fail(err)
			}
			if err := os.Remove(secretfs.Dir); err != nil {
				fail(err)
			}
			fmt.Println("inside", os.Symlink("/run/moved/api", secretfs.Dir))
		}
	}
}

// ctr is a running test container: one line out for each command in.
type ctr struct {
	cmd   *exec.Cmd
	in    io.Writer
	lines chan string
}

func startContainer(t *testing.T, view *mount.Mount) *ctr {
	t.Helper()
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "LIVE_TEST_CONTAINER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.ExtraFiles = []*os.File{view.File()}
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	view.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &ctr{cmd: cmd, in: in, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	c.next(t, "ready")
	return c
}

// next is the container's next line, which must start with prefix.
func (c *ctr) next(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok || !strings.HasPrefix(l, prefix) {
			t.Fatalf("the container printed %q (open %v), want %s...", l, ok, prefix)
		}
		return l
	case <-time.After(5 * time.Second):
		t.Fatalf("the container printed nothing, want %s...", prefix)
	}
	return ""
}

func (c *ctr) ask(t *testing.T, cmd, reply string) string {
	t.Helper()
	fmt.Fprintln(c.in, cmd)
	return c.next(t, reply)
}

// TestDeliverRotateRevoke: the container reads what the agent writes
// through its writable mount, atomically replaced, with the one before
// beside it; it cannot write; a revocation takes both.
func TestDeliverRotateRevoke(t *testing.T) {
	testenv.RequireRoot(t, "mounts")
	o := mount.Owner{UID: 1000, GID: 1000, Mode: 0o440}
	fs, view, err := Deliver(gen1, o, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	c := startContainer(t, view)
	if got := c.ask(t, "read secret", "content"); got != "content "+string(gen1) {
		t.Fatalf("delivered: %s", got)
	}
	if err := fs.Rotate(gen2, gen1); err != nil {
		t.Fatal(err)
	}
	if got := c.ask(t, "read secret", "content"); got != "content "+string(gen2) {
		t.Errorf("after a rotation: %s", got)
	}
	if got := c.ask(t, "read secret.previous", "content"); got != "content "+string(gen1) {
		t.Errorf("the one before: %s", got)
	}
	if got := c.ask(t, "write x", "write"); !strings.Contains(got, "read-only file system") {
		t.Errorf("the container wrote into its view: %s", got)
	}
	if err := fs.DropPrevious(); err != nil {
		t.Fatal(err)
	}
	if got := c.ask(t, "read secret.previous", "error"); !strings.Contains(got, "no such file") {
		t.Errorf("the one before after the grace: %s", got)
	}
	if err := fs.Revoke(); err != nil {
		t.Fatal(err)
	}
	if got := c.ask(t, "read secret", "error"); !strings.Contains(got, "no such file") {
		t.Errorf("a revoked container still reads: %s", got)
	}
}

// TestReacquire: a restarted agent takes back the very mount it handed
// out, and nothing a container put in its place.
func TestReacquire(t *testing.T) {
	testenv.RequireRoot(t, "mounts, setns")
	o := mount.Owner{UID: 0, GID: 0, Mode: 0o400}
	first, view, err := Deliver(gen1, o, false)
	if err != nil {
		t.Fatal(err)
	}
	id := first.MountID()
	c := startContainer(t, view)
	first.Close() // the agent stops
	pidfd, err := unix.PidfdOpen(c.cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	again, err := Reacquire(pidfd, id, o)
	if err != nil {
		t.Fatalf("Reacquire of the mount it handed out: %v", err)
	}
	if cur, err := again.Current(); err != nil || !bytes.Equal(cur, gen1) {
		t.Errorf("the reacquired filesystem holds %q, %v", cur, err)
	}
	if err := again.Rotate(gen3, gen1); err != nil {
		t.Fatal(err)
	}
	again.Close()
	if got := c.ask(t, "read secret", "content"); got != "content "+string(gen3) {
		t.Errorf("after the reacquired rotation: %s", got)
	}
	if got := c.ask(t, "write x", "write"); !strings.Contains(got, "read-only file system") {
		t.Errorf("the reacquired clone made the container's view writable: %s", got)
	}
	// The container replaces its view with a tmpfs of its own.
	if got := c.ask(t, "replace x", "replaced"); got != "replaced <nil>" {
		t.Fatal(got)
	}
	if _, err := Reacquire(pidfd, id, o); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Reacquire of a tmpfs the container mounted: %v, want ErrNotOurs", err)
	}
	if got := c.ask(t, "read secret", "error"); !strings.Contains(got, "no such file") {
		t.Errorf("something was written into the container's own tmpfs: %s", got)
	}
}

// TestReacquireOnlyTheMountRoot: /run/northstar pointed at a directory
// inside the agent's own mount is not taken back either: the agent would
// write the secret where the container does not read it, and a revocation
// would miss the one it does.
func TestReacquireOnlyTheMountRoot(t *testing.T) {
	testenv.RequireRoot(t, "mounts, setns")
	o := mount.Owner{UID: 0, GID: 0, Mode: 0o400}
	first, view, err := Deliver(gen1, o, true)
	if err != nil {
		t.Fatal(err)
	}
	id := first.MountID()
	c := startContainer(t, view)
	first.Close()
	if got := c.ask(t, "inside x", "inside"); got != "inside <nil>" {
		t.Fatal(got)
	}
	pidfd, err := unix.PidfdOpen(c.cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if _, err := Reacquire(pidfd, id, o); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Reacquire of a directory inside the view: %v, want ErrNotOurs", err)
	}
}

// TestClosedFSRefuses: after Close (the container is gone) a rotation that
// still holds the FS fails instead of using an fd number the process may
// have given to another file since.
func TestClosedFSRefuses(t *testing.T) {
	testenv.RequireRoot(t, "mounts")
	fs, view, err := Deliver(gen1, mount.Owner{Mode: 0o400}, false)
	if err != nil {
		t.Fatal(err)
	}
	view.Close()
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Rotate": fs.Rotate(gen2, gen1), "DropPrevious": fs.DropPrevious(), "Revoke": fs.Revoke(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if _, err := fs.Current(); !errors.Is(err, ErrClosed) {
		t.Errorf("Current after Close: %v, want ErrClosed", err)
	}
	if err := fs.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}
