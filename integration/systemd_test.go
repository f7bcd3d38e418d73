// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const unitPath = "../contrib/systemd/northstar-agent.service"

// mountNamespaceOptions are the systemd.exec(5) settings that run a service
// in a mount namespace of its own. The agent serves only peers in its own
// mount namespace, so any of them would make it refuse every hook.
var mountNamespaceOptions = []string{
	"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
	"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
	"TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage",
	"ProtectKernelModules", "ProtectKernelLogs", "ProtectKernelTunables", "ProtectControlGroups",
	"ProtectProc", "ProcSubset", "MountAPIVFS", "DynamicUser", "PrivateUsers",
}

// unitService returns the key=value settings of the unit's [Service]
// section, in order (a key may repeat).
func unitService(t *testing.T, text string) [][2]string {
	t.Helper()
	var kv [][2]string
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit line %q is not key=value", line)
			}
			kv = append(kv, [2]string{k, v})
		}
	}
	return kv
}

// TestSystemdUnit keeps the shipped unit working: systemd-analyze verify
// accepts it without a warning, it gives the agent no private mount
// namespace, and its ExecStart, run the way systemd would run it (the
// unit's UMask, its file, memory and task limits, the last two in cgroups
// of its own), serves an API container whose process is not root, with
// the root key mlocked.
func TestSystemdUnit(t *testing.T) {
	requires(t, "systemd-analyze", "prlimit", "runc", "sh")
	raw, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	e, sock := apiEnv(t)
	// The unit as installed, pointed at this test's binary and config.
	text := strings.ReplaceAll(string(raw), "/usr/local/bin/northstarctl", bins.ctl)
	text = strings.ReplaceAll(text, "/etc/northstar/config.toml", e.config)
	unit := filepath.Join(t.TempDir(), "northstar-agent.service")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}

	var argv []string
	limits := map[string]string{}
	for _, kv := range unitService(t, text) {
		for _, bad := range mountNamespaceOptions {
			if kv[0] == bad {
				t.Errorf("%s sets %s: the agent would run in a mount namespace of its own and refuse every hook", unitPath, bad)
			}
		}
		switch kv[0] {
		case "ExecStart":
			argv = strings.Fields(kv[1])
		case "LimitCORE", "LimitMEMLOCK", "LimitNOFILE", "MemoryMax", "TasksMax", "UMask":
			limits[kv[0]] = kv[1]
		}
	}
	if len(argv) == 0 || argv[0] != bins.ctl {
		t.Fatalf("ExecStart %q does not run northstarctl", argv)
	}
	want := map[string]string{"LimitCORE": "0", "LimitMEMLOCK": "8M", "LimitNOFILE": "65536", "MemoryMax": "512M", "TasksMax": "256", "UMask": "0077"}
	for k, v := range want {
		if limits[k] != v {
			t.Fatalf("unit sets %s=%q, want %q (the values this test applies)", k, limits[k], v)
		}
	}

	// Run ExecStart as systemd would: in memory and pids cgroups of its
	// own with MemoryMax and TasksMax (cgroup v1 here), under the unit's
	// umask and rlimits. (As root, CAP_IPC_LOCK makes the memlock limit
	// moot; the key-page test in agent/keys covers a process without room
	// to lock.)
	name := filepath.Base(t.TempDir())
	for ctrl, file := range map[string]string{"memory": "memory.limit_in_bytes", "pids": "pids.max"} {
		dir := filepath.Join("/sys/fs/cgroup", ctrl, "ns-unit-"+name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("a %s cgroup for the unit's limits: %v", ctrl, err)
		}
		t.Cleanup(func() { os.Remove(dir) })
		val := map[string]string{"memory": "536870912", "pids": "256"}[ctrl]
		if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// LimitNOFILE as far as this host allows: root here lacks
	// CAP_SYS_RESOURCE, so no limit goes above the hard one it has.
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	files := min(uint64(65536), nofile.Max)
	t.Logf("applying UMask=0077, MemoryMax=512M, TasksMax=256 (cgroup v1) and LimitNOFILE=%d (the unit's 65536, capped by this host's hard limit)", files)
	script := fmt.Sprintf(`echo $$ > /sys/fs/cgroup/memory/ns-unit-%s/cgroup.procs && echo $$ > /sys/fs/cgroup/pids/ns-unit-%s/cgroup.procs && umask %s && exec prlimit --core=0 --memlock=8388608 --nofile=%d -- "$@"`,
		name, name, want["UMask"], files)
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, argv...)...)
	a := startAgentCmd(t, cmd, sock)
	// A container user that is not root reaches its own socket (under
	// UMask=0077 its directory was 0700, the agent's alone).
	b := apiBundle(t, e, "client", "nsapi identity")
	b.spec.Process.User = specs.User{UID: 1000, GID: 1000}
	if r := b.runcRun(t); r.err != nil || !strings.HasPrefix(strings.TrimSpace(r.stdout), "client ") {
		t.Errorf("a container running as uid 1000 could not use its API under the unit's umask:\n%s", r)
	}
	if strings.Contains(a.out.String(), "mlock") {
		t.Errorf("the unit's agent could not mlock its root key:\n%s", a.out)
	}
}
