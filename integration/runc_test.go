// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// probe prints, as key=value lines, what a container sees of its secret.
const probe = `
echo secret=$(cat /run/northstar/secret)
echo owner=$(stat -c %u:%g:%a /run/northstar/secret)
echo opts=$(awk '$5=="/run/northstar"{print $6}' /proc/self/mountinfo)
echo files=$(ls -A /run/northstar | tr '\n' ' ')
echo x 2>/dev/null > /run/northstar/secret; echo write=$?
touch /run/northstar/new 2>/dev/null; echo create=$?
echo id=$(id -u):$(id -g)
`

func TestRuncSecretReachesContainer(t *testing.T) {
	requires(t, "runc")
	e := newEnv(t, "", nil)
	want := e.secretHex(t)

	r := newBundle(t, e.dir, false, probe).withHook("createRuntime", e.config).runcRun(t)
	if r.err != nil {
		t.Fatalf("container failed:\n%s", r)
	}
	got := field(r.stdout, "secret")
	if !isSecretHex(got) || got != want {
		t.Fatalf("container read %q, want the 64-hex lifecycle secret\n%s", got, r)
	}
	if o := field(r.stdout, "owner"); o != "0:0:400" {
		t.Errorf("secret owner:group:mode = %s, want 0:0:400", o)
	}
	opts := strings.Split(field(r.stdout, "opts"), ",")
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec", "nosymfollow"} {
		if !contains(opts, o) {
			t.Errorf("mount options %v lack %s", opts, o)
		}
	}
	if f := field(r.stdout, "files"); strings.TrimSpace(f) != "secret" {
		t.Errorf("/run/northstar holds %q, want only the secret", f)
	}
	if field(r.stdout, "write") == "0" || field(r.stdout, "create") == "0" {
		t.Errorf("root in the container could write (write=%s create=%s)", field(r.stdout, "write"), field(r.stdout, "create"))
	}

	// A second container of the same lifecycle reads the same bytes.
	r2 := newBundle(t, e.dir, false, probe).withHook("createRuntime", e.config).runcRun(t)
	if r2.err != nil || field(r2.stdout, "secret") != got {
		t.Fatalf("second container did not read the same secret:\n%s", r2)
	}
}

func TestRuncStagesAndOwners(t *testing.T) {
	requires(t, "runc")
	stagesAndOwners(t, "runc")
}

// TestCrunStagesAndOwners: crun (Debian's 1.8.1) runs the hook at every
// stage as runc does, with the same owners and modes.
func TestCrunStagesAndOwners(t *testing.T) {
	requires(t, "crun")
	stagesAndOwners(t, "crun")

	// crun 1.8 passes the hook no pid at createContainer (state "pid": 0),
	// so there the hook cannot tell where the container is: the start
	// must fail, never go on without the secret.
	e := newEnv(t, "", nil)
	r := newBundle(t, e.dir, false, "echo STARTED").withHook("createContainer", e.config).runWith(t, "crun")
	if r.err == nil || strings.Contains(r.stdout, "STARTED") || !strings.Contains(r.stderr, "error executing hook") {
		t.Errorf("crun started a container whose createContainer hook got no pid, or failed for another reason:\n%s", r)
	}
}

// stagesAndOwners runs the hook at each stage, and with each way of
// choosing the file's owner, under runtime (crun: no createContainer).
func stagesAndOwners(t *testing.T, runtime string) {
	e := newEnv(t, "", nil)
	want := e.secretHex(t)
	tests := []struct {
		name      string
		stage     string
		edit      func(*specs.Spec)
		wantOwner string // as seen inside the container
		wantID    string
	}{
		{name: "createRuntime", stage: "createRuntime", wantOwner: "0:0:400", wantID: "0:0"},
		{name: "prestart", stage: "prestart", wantOwner: "0:0:400", wantID: "0:0"},
		{name: "createContainer", stage: "createContainer", wantOwner: "0:0:400", wantID: "0:0"},
		{
			name: "process user 1000 can read its secret", stage: "createRuntime",
			edit:      func(s *specs.Spec) { s.Process.User = specs.User{UID: 1000, GID: 1000} },
			wantOwner: "1000:1000:400", wantID: "1000:1000",
		},
		{
			name: "owner and mode from annotations", stage: "createRuntime",
			edit: func(s *specs.Spec) {
				s.Process.User = specs.User{UID: 1000, GID: 1000}
				s.Annotations = map[string]string{"io.northstar.secret.uid": "0", "io.northstar.secret.gid": "1000", "io.northstar.secret.mode": "0440"}
			},
			wantOwner: "0:1000:440", wantID: "1000:1000",
		},
		{
			name: "user namespace: owner translated through the mappings", stage: "createRuntime",
			edit: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
				s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}}
				s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}}
				s.Process.User = specs.User{UID: 1000, GID: 1000}
				// sysfs needs a network namespace owned by the user
				// namespace; keep the mount list simple.
				s.Mounts = dropMount(s.Mounts, "/sys/fs/cgroup")
			},
			wantOwner: "1000:1000:400", wantID: "1000:1000",
		},
	}
	for _, tt := range tests {
		if runtime == "crun" && tt.stage == "createContainer" {
			continue // see TestCrunStagesAndOwners
		}
		t.Run(tt.name, func(t *testing.T) {
			b := newBundle(t, e.dir, false, probe).withHook(tt.stage, e.config)
			if tt.edit != nil {
				tt.edit(b.spec)
			}
			if strings.Contains(tt.name, "user namespace") {
				// The rootfs must be owned by the container's root.
				(&account{uid: 300000, gid: 300000}).chownR(t, b.rootfs)
			}
			r := b.runWith(t, runtime)
			if r.err != nil {
				t.Fatalf("container failed:\n%s", r)
			}
			if got := field(r.stdout, "secret"); got != want {
				t.Fatalf("read %q, want the secret\n%s", got, r)
			}
			opts := strings.Split(field(r.stdout, "opts"), ",")
			for _, o := range []string{"ro", "nosuid", "nodev", "noexec", "nosymfollow"} {
				if !contains(opts, o) {
					t.Errorf("mount options %v lack %s", opts, o)
				}
			}
			if field(r.stdout, "write") == "0" || field(r.stdout, "create") == "0" {
				t.Errorf("the container wrote to /run/northstar:\n%s", r)
			}
			if o := field(r.stdout, "owner"); o != tt.wantOwner {
				t.Errorf("owner = %s, want %s", o, tt.wantOwner)
			}
			if id := field(r.stdout, "id"); id != tt.wantID {
				t.Errorf("process id = %s, want %s", id, tt.wantID)
			}
		})
	}
}

func TestRuncDisableAnnotation(t *testing.T) {
	requires(t, "runc")
	e := newEnv(t, "", nil)
	b := newBundle(t, e.dir, false, `test -e /run/northstar && echo present=yes || echo present=no`).withHook("createRuntime", e.config)
	b.spec.Annotations = map[string]string{"io.northstar.secret.disable": "true"}
	r := b.runcRun(t)
	if r.err != nil || field(r.stdout, "present") != "no" {
		t.Fatalf("disabled container: want no /run/northstar\n%s", r)
	}
}

func dropMount(ms []specs.Mount, dest string) []specs.Mount {
	out := ms[:0]
	for _, m := range ms {
		if m.Destination != dest {
			out = append(out, m)
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// hostMounts returns the mount points of the test's (host) mount namespace.
func hostMounts(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 {
			m[filepath.Clean(fs[4])] = true
		}
	}
	return m
}
