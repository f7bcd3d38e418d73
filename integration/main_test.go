// SPDX-License-Identifier: Apache-2.0

//go:build integration

// Package integration runs northstar against the real stack: Debian's runc,
// rootlesskit, containerd and swtpm, real kernel mounts, real user
// namespaces. Run it as root (`make test` does); when CI=true a missing
// prerequisite fails the run instead of skipping.
package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bins holds the binaries under test, built once per run into a directory
// any user can read (the rootless tests exec them as an unprivileged user).
var bins struct {
	dir, hook, ctl string
	agentHook      string // northstar-agent-hook, beside hook
}

func TestMain(m *testing.M) {
	if sock := os.Getenv(httpFloorEnv); sock != "" {
		os.Exit(serveHTTPFloor(sock))
	}
	os.Exit(testMain(m))
}

// httpFloorEnv set to a socket path makes the test binary serve a handler
// that does nothing there, instead of running tests: the bench's floor,
// measured across processes as the agent's round trips are.
const httpFloorEnv = "NORTHSTAR_HTTP_FLOOR"

func serveHTTPFloor(sock string) int {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"identity":"client","generation":1}` + "\n"))
	}))
	fmt.Fprintln(os.Stderr, err)
	return 1
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "northstar-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bins.dir = dir
	bins.hook = filepath.Join(dir, "northstar-hook")
	bins.ctl = filepath.Join(dir, "northstarctl")
	bins.agentHook = filepath.Join(dir, "northstar-agent-hook")
	for out, pkg := range map[string]string{bins.hook: "./cmd/northstar-hook", bins.ctl: "./cmd/northstarctl"} {
		if err := buildStatic("..", pkg, out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := buildCgo("northstar-agent-hook", bins.agentHook); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// buildCgo builds the command cmd, which has a fast path in C, into out
// as make build links it (scripts/build-cgo.sh: cgo, static), and writes
// it as an install would (rewriteAsInstalled).
func buildCgo(cmd, out string) error {
	if b, err := exec.Command("../scripts/build-cgo.sh", cmd, out).CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/build-cgo.sh %s: %v\n%s", cmd, err, b)
	}
	return rewriteAsInstalled(out)
}

// buildStatic builds the Go package pkg of the module in dir into out as a
// static, cgo-free binary, as `make build` does, and writes it as an
// install would (rewriteAsInstalled).
func buildStatic(dir, pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return rewriteAsInstalled(out)
}

// rewriteAsInstalled writes the executable at path anew, front to back:
// how dpkg (the package) and install(1) or cp (from source) put a binary
// on disk, which the linker's output is not. How a file came into the page
// cache changes how many page faults a process takes to map it (the
// folios the kernel maps a fault at a time follow the writes): here,
// northstar-hook as the linker wrote it took 239-251 faults to print its
// usage, rewritten 198-200, and 0.6-1.4 ms less (perf stat -r 200), which
// moved the hook rows of make bench by 0.025. The tests and benchmarks run
// binaries as an installed system holds them.
func rewriteAsInstalled(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o755)
}

// requires fails (in CI) or skips (elsewhere) unless every command exists
// and the test runs as root.
func requires(t *testing.T, cmds ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing prerequisites %v (scripts/setup.sh installs them)", missing)
	}
	t.Skipf("missing prerequisites %v (run scripts/setup.sh)", missing)
}

// requiresFile fails (in CI) or skips (elsewhere) unless path exists; how
// says what provides it.
func requiresFile(t *testing.T, path, how string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing %s (%s)", path, how)
	}
	t.Skipf("missing %s (%s)", path, how)
}
