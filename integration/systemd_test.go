//go:build integration

package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
// namespace, and its ExecStart, run under the unit's resource limits,
// serves an API container with the root key mlocked.
func TestSystemdUnit(t *testing.T) {
	requires(t, "systemd-analyze", "prlimit", "runc")
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
		case "LimitCORE", "LimitMEMLOCK":
			limits[kv[0]] = kv[1]
		}
	}
	if len(argv) == 0 || argv[0] != bins.ctl {
		t.Fatalf("ExecStart %q does not run northstarctl", argv)
	}
	if limits["LimitCORE"] != "0" || limits["LimitMEMLOCK"] != "8M" {
		t.Fatalf("unit limits %v, want LimitCORE=0 LimitMEMLOCK=8M (the values this test applies)", limits)
	}

	// Run ExecStart under the unit's limits. (As root, CAP_IPC_LOCK makes
	// the memlock limit moot; the key-page test in agent/keys covers a
	// process without room to lock.)
	cmd := exec.Command("prlimit", append([]string{"--core=0", "--memlock=8388608", "--"}, argv...)...)
	a := startAgentCmd(t, cmd, sock)
	if got := in(t, e, "client", "nsapi identity"); !strings.HasPrefix(got, "client ") {
		t.Errorf("the unit's agent served identity %q, want client", got)
	}
	if strings.Contains(a.out.String(), "mlock") {
		t.Errorf("the unit's agent could not mlock its root key:\n%s", a.out)
	}
}
