// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want invocation
		err  string // a substring of the error; "" = none
	}{
		// As engines run runc (DESIGN.md §18 logged Docker 20.10's).
		{name: "docker create", args: []string{"--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/c/log.json", "--log-format", "json", "create", "--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "c1"},
			want: invocation{command: "create", id: "c1", pidFile: "/run/b/init.pid", bundle: "/run/b", log: "/run/c/log.json", logFormat: "json"}},
		{name: "docker start", args: []string{"--root", "/r", "--log", "/l", "--log-format", "json", "start", "c1"},
			want: invocation{command: "start", log: "/l", logFormat: "json"}},
		{name: "docker delete --force", args: []string{"--root", "/r", "delete", "--force", "c1"}, want: invocation{command: "delete"}},
		{name: "systemd cgroup", args: []string{"--systemd-cgroup", "--root", "/r", "create", "-b", "/b", "c1"}, want: invocation{command: "create", id: "c1", bundle: "/b"}},
		{name: "podman create", args: []string{"--debug", "--log-level=debug", "--cgroup-manager=cgroupfs", "--rootless=true", "--root", "/r", "create", "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "--preserve-fds", "1", "--no-new-keyring", "c1"},
			want: invocation{command: "create", id: "c1", pidFile: "/p", bundle: "/b"}},
		{name: "run", args: []string{"run", "-d", "--keep", "--no-subreaper", "-b", "/b", "c1"}, want: invocation{command: "run", id: "c1", bundle: "/b"}},
		{name: "no bundle: the working directory", args: []string{"create", "c1"}, want: invocation{command: "create", id: "c1"}},
		{name: "empty --bundle=: the working directory", args: []string{"create", "--bundle=", "c1"}, want: invocation{command: "create", id: "c1"}},
		{name: "single dash, equals", args: []string{"-root=/r", "-log-format=text", "create", "-bundle=/b", "c1"}, want: invocation{command: "create", id: "c1", bundle: "/b", logFormat: "text"}},
		{name: "double dash b", args: []string{"create", "--b=/b", "c1"}, want: invocation{command: "create", id: "c1", bundle: "/b"}},
		{name: "flags after the id (runc moves them)", args: []string{"create", "c1", "--bundle", "/b"}, want: invocation{command: "create", id: "c1", bundle: "/b"}},
		{name: "last bundle wins", args: []string{"create", "-b", "/a", "--bundle", "/b", "c1"}, want: invocation{command: "create", id: "c1", bundle: "/b"}},
		{name: "a value that looks like a flag is a value", args: []string{"create", "--pid-file", "--bundle", "c1"}, want: invocation{command: "create", id: "c1", pidFile: "--bundle"}},
		{name: "a value that looks like the bundle flag", args: []string{"create", "--console-socket", "-b", "--bundle", "/b", "c1"}, want: invocation{command: "create", id: "c1", bundle: "/b"}},
		{name: "after -- nothing is a flag", args: []string{"create", "c1", "--", "--bundle", "/evil"}, want: invocation{command: "create", id: "c1"}},
		{name: "-- before the command", args: []string{"--root", "/r", "--", "create", "-b", "/b", "c1"}, want: invocation{command: "create", id: "c1", bundle: "/b"}},
		{name: "global value that looks like a command", args: []string{"--root", "create", "state", "c1"}, want: invocation{command: "state"}},
		{name: "global bool with value", args: []string{"--debug=false", "--systemd-cgroup=true", "create", "c1"}, want: invocation{command: "create", id: "c1"}},
		{name: "version", args: []string{"--version"}, want: invocation{}},
		{name: "nothing", args: nil, want: invocation{}},
		{name: "create --help creates nothing", args: []string{"create", "--help"}, want: invocation{command: "create", help: true}},
		{name: "create -h=false creates", args: []string{"create", "-h=false", "c1"}, want: invocation{command: "create", id: "c1"}},
		{name: "other commands pass unread", args: []string{"exec", "--whatever", "-b", "x", "c1"}, want: invocation{command: "exec"}},
		{name: "a dash alone is an argument", args: []string{"create", "-", "-b", "/b"}, want: invocation{command: "create", id: "-", bundle: "/b"}},
		{name: "a dash alone as the command", args: []string{"-"}, want: invocation{command: "-"}},

		// Refused: the wrapper could not tell which bundle runc reads.
		{name: "unknown global flag", args: []string{"--frobnicate", "x", "create", "-b", "/b", "c1"}, err: `unknown global flag "--frobnicate"`},
		{name: "unknown create flag", args: []string{"create", "--frobnicate", "/x", "c1"}, err: `unknown flag "--frobnicate"`},
		{name: "crun --config is another spec file", args: []string{"create", "--config", "/elsewhere.json", "c1"}, err: `unknown flag "--config"`},
		{name: "crun -f", args: []string{"create", "-f", "/elsewhere.json", "c1"}, err: `unknown flag "-f"`},
		{name: "three dashes", args: []string{"create", "---bundle", "/b", "c1"}, err: "unknown flag"},
		{name: "no name", args: []string{"create", "--=/b", "c1"}, err: "unknown flag"},
		{name: "bundle without value", args: []string{"create", "c1", "--bundle"}, err: "needs a value"},
		{name: "global without value", args: []string{"--root"}, err: "needs a value"},
		{name: "bool with a non-bool value", args: []string{"--debug=yes", "create", "c1"}, err: "want true or false"},
		{name: "create bool with a non-bool value", args: []string{"create", "--no-pivot=/b", "c1"}, err: "want true or false"},
		{name: "run-only flag in create", args: []string{"create", "-d", "c1"}, err: `unknown flag "-d"`},
		{name: "a NUL in a flag", args: []string{"create", "--bundle\x00", "/b"}, err: "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseArgs(%q) = %+v, %v; want an error with %q", tt.args, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseArgs(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
			}
		})
	}
}

func TestPrepares(t *testing.T) {
	for cmd, want := range map[string]bool{"create": true, "run": true, "start": false, "delete": false, "restore": false, "": false, "Create": false} {
		if got := (invocation{command: cmd}).prepares(); got != want {
			t.Errorf("%q prepares = %v", cmd, got)
		}
	}
	if (invocation{command: "create", help: true}).prepares() {
		t.Error("create --help prepares")
	}
}

// FuzzParseArgs: whatever the arguments, parsing does not panic, and when
// it accepts a create or run it found the bundle runc would: the value of
// the last --bundle or -b among the flags before "--".
func FuzzParseArgs(f *testing.F) {
	f.Add("--root\x00/r\x00create\x00--bundle\x00/b\x00c1")
	f.Add("create\x00c1\x00--\x00-b\x00/x")
	f.Add("--log=/l\x00run\x00-b=/b\x00--pid-file\x00-b\x00c")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		inv, err := parseArgs(args)
		if err != nil || !inv.prepares() {
			return
		}
		if want := naiveBundle(args); inv.bundle != want {
			t.Fatalf("parseArgs(%q) bundle %q, an independent reading says %q", args, inv.bundle, want)
		}
	})
}

// naiveBundle is a second, simpler reading of an accepted create/run: skip
// to the command, then walk the flags with the value table.
func naiveBundle(args []string) string {
	i := 0
	for i < len(args) && args[i] != "--" && isFlag(args[i]) {
		name, _, has := splitFlag(args[i])
		if globalValue[name] && !has {
			i++
		}
		i++
	}
	if i < len(args) && args[i] == "--" {
		i++
	}
	bundle := ""
	for i++; i < len(args) && args[i] != "--"; i++ {
		if !isFlag(args[i]) {
			continue
		}
		name, v, has := splitFlag(args[i])
		if createValue[name] && !has {
			i++
			v = args[i]
		}
		if name == "b" || name == "bundle" {
			bundle = v
		}
	}
	return bundle
}
