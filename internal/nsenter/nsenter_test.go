// SPDX-License-Identifier: Apache-2.0

package nsenter

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// childWithPrivateMount starts a process in a mount namespace of its own in
// which dir has a tmpfs holding a file "inside"; the host never sees it.
func childWithPrivateMount(t *testing.T, dir string) int {
	t.Helper()
	script := fmt.Sprintf("mount -t tmpfs -o size=16k nsenter-test %[1]s && touch %[1]s/inside && echo ready && exec sleep 60", dir)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 6)
		_, err := out.Read(buf)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("child did not get ready: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child did not get ready in 10s")
	}
	return cmd.Process.Pid
}

func TestInMountNamespace(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces")
	dir := t.TempDir()
	pid := childWithPrivateMount(t, dir)
	inside := filepath.Join(dir, "inside")

	if _, err := os.Stat(inside); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the host sees the child's private mount: %v", err)
	}
	same, err := SameNamespace(pid, "mnt")
	if err != nil || same {
		t.Fatalf("SameNamespace(child, mnt) = %v, %v; want false", same, err)
	}
	if same, err := SameNamespace(os.Getpid(), "mnt"); err != nil || !same {
		t.Fatalf("SameNamespace(self, mnt) = %v, %v; want true", same, err)
	}
	var home unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &home); err != nil {
		t.Fatal(err)
	}
	// Many calls: each tainted thread must die with its goroutine and
	// never run another goroutine of this process in the child's namespace,
	// and no thread may stay there (the main thread, which the runtime
	// parks instead of ending, would for the rest of the process's life).
	for i := 0; i < 20; i++ {
		err := InMountNamespace(pid, func() error {
			_, err := os.Stat(inside)
			return err
		})
		if err != nil {
			t.Fatalf("call %d: inside the child's namespace: %v", i, err)
		}
		if _, err := os.Stat(inside); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("call %d: after InMountNamespace the caller sees the child's mount: %v", i, err)
		}
		tasks, err := filepath.Glob("/proc/self/task/*/ns/mnt")
		if err != nil || len(tasks) == 0 {
			t.Fatalf("threads: %v %v", tasks, err)
		}
		for _, ns := range tasks {
			var st unix.Stat_t
			if err := unix.Stat(ns, &st); err != nil {
				continue // the thread has gone
			}
			if st.Dev != home.Dev || st.Ino != home.Ino {
				t.Fatalf("call %d: thread %s is still in the child's mount namespace after InMountNamespace returned", i, ns)
			}
		}
	}
	want := errors.New("from fn")
	if err := InMountNamespace(pid, func() error { return want }); !errors.Is(err, want) {
		t.Errorf("fn's error not returned: %v", err)
	}
}

func TestInMountNamespaceNoSuchProcess(t *testing.T) {
	called := false
	err := InMountNamespace(-1, func() error { called = true; return nil })
	if err == nil || called {
		t.Fatalf("InMountNamespace(-1) = %v, fn called %v; want an error and no call", err, called)
	}
	if _, err := SameNamespace(-1, "mnt"); err == nil {
		t.Error("SameNamespace(-1) succeeded")
	}
}
