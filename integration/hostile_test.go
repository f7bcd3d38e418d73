// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/internal/testtree"
)

// hostileImages are images that try to make the hook write or mount outside
// their rootfs. $HOST is a directory on the host. The hook must either
// refuse (the container does not start, the error names northstar) or put
// the secret inside the container's own rootfs; the host stays untouched.
type hostileImage struct {
	name   string
	image  []string
	refuse bool
	// volume: $HOST is bind-mounted into the container at /vol, as a host
	// volume would be; runTmpfs: the spec mounts a tmpfs at /run, as
	// containerd's default spec does.
	volume, runTmpfs bool
}

var hostileImages = []hostileImage{
	{name: "/run absolute symlink to a host dir", image: []string{"symlink run $HOST"}, refuse: true},
	{name: "/run relative symlink climbing to a host dir", image: []string{"symlink run ../../../../../../../../..$HOST"}, refuse: true},
	{name: "/run/northstar absolute symlink to a host dir", image: []string{"dir run", "symlink run/northstar $HOST"}, refuse: true},
	{name: "/run/northstar relative symlink climbing out", image: []string{"dir run", "symlink run/northstar ../../../../../../../..$HOST"}, refuse: true},
	{name: "/run absolute symlink to a path the image also has", image: []string{"dir $HOST", "symlink run $HOST"}},
	{name: "/run magic link through /proc/self/root", image: []string{"symlink run /proc/self/root$HOST"}, refuse: true},
	{name: "/run/northstar magic link to /proc/1/root", image: []string{"dir run", "symlink run/northstar /proc/1/root"}, refuse: true},
	{name: "/run/northstar magic link to /proc/self/cwd", image: []string{"dir run", "symlink run/northstar /proc/self/cwd"}, refuse: true},
	{name: "/run/northstar is a regular file", image: []string{"dir run", "file run/northstar"}, refuse: true},
	{name: "/run is a regular file", image: []string{"file run"}, refuse: true},
	{name: "pre-existing secret symlink to a host file", image: []string{"dir run/northstar", "symlink run/northstar/secret $HOST/victim"}},
	{name: "/run/northstar points at the rootfs root", image: []string{"dir run", "symlink run/northstar ../.."}, refuse: true},
}

// mountTargetImages aim /run/northstar at other mounts of the container:
// only its root filesystem and a tmpfs exactly at /run may take the secret.
var mountTargetImages = []hostileImage{
	{name: "/run symlink to a host volume mounted in the container", image: []string{"dir vol", "symlink run /vol"}, volume: true, refuse: true},
	{name: "/run/northstar symlink to a host volume", image: []string{"dir vol", "dir run", "symlink run/northstar /vol"}, volume: true, refuse: true},
	{name: "/run/northstar symlink to /proc", image: []string{"dir run", "symlink run/northstar /proc"}, refuse: true},
	{name: "/run/northstar symlink to /proc/sys", image: []string{"dir run", "symlink run/northstar /proc/sys"}, refuse: true},
	{name: "/run/northstar symlink to /sys", image: []string{"dir run", "symlink run/northstar /sys"}, refuse: true},
	{name: "/run/northstar symlink to /dev (a tmpfs, not at /run)", image: []string{"dir run", "symlink run/northstar /dev"}, refuse: true},
	{name: "/run/northstar symlink to /dev/pts", image: []string{"dir run", "symlink run/northstar /dev/pts"}, refuse: true},
	{name: "tmpfs at /run (containerd's default spec)", runTmpfs: true},
}

// runHostile starts a container of each image with run, and checks that the
// hook refused it (naming itself) or delivered the secret want, and that
// the host directory and the host mount table stayed as they were.
func runHostile(t *testing.T, images []hostileImage, want string, newBundle func(t *testing.T) *bundle, run func(t *testing.T, b *bundle) result) {
	for _, tt := range images {
		t.Run(tt.name, func(t *testing.T) {
			host := filepath.Join(worldDir(t), "host")
			if err := os.MkdirAll(host, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(host, "victim"), []byte("host file"), 0o644); err != nil {
				t.Fatal(err)
			}
			before, mountsBefore := testtree.Snapshot(host), hostMounts(t)

			b := newBundle(t)
			if err := testtree.Build(b.rootfs, host, tt.image); err != nil {
				t.Fatal(err)
			}
			if tt.volume {
				b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: host, Options: []string{"rbind", "rw"}})
			}
			if tt.runTmpfs {
				b.spec.Mounts = append(b.spec.Mounts, specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}})
			}
			r := run(t, b)
			switch {
			case tt.refuse && r.err == nil:
				t.Errorf("container started, want the hook to refuse it:\n%s", r)
			case tt.refuse && (!strings.Contains(r.stderr, "northstar-hook: mount: ") && !strings.Contains(r.stderr, "northstar-agent-hook: mount: ") ||
				!(strings.Contains(r.stderr, "/run/northstar in the container rootfs") || strings.Contains(r.stderr, "refused mount target"))):
				t.Errorf("refusal does not name the cause:\n%s", r)
			case !tt.refuse && (r.err != nil || !strings.Contains(r.stdout, want)):
				t.Errorf("container did not read its secret:\n%s", r)
			}
			if after := testtree.Snapshot(host); after != before {
				t.Errorf("host directory changed:\nbefore:\n%safter:\n%s", before, after)
			}
			if after := hostMounts(t); !reflect.DeepEqual(after, mountsBefore) {
				t.Errorf("host mount table changed")
			}
		})
	}
}

func TestRuncHostileImages(t *testing.T) {
	requires(t, "runc")
	e := newEnv(t, "", nil)
	runHostile(t, append(hostileImages, mountTargetImages...), e.secretHex(t),
		func(t *testing.T) *bundle {
			return newBundle(t, e.dir, false, `cat /run/northstar/secret`).withHook("createRuntime", e.config)
		},
		func(t *testing.T, b *bundle) result { return b.runcRun(t) })
}

// hostUntouched checks, after a hostile image ran, that the host
// directory and the host's mounts below it are as before was taken
// (testtree.Snapshot, mountsUnder), but for the one trace allowed with
// volumeTrace: the empty northstar directory runc may make in a writable
// volume an image symlinks to, before the start is refused.
func hostUntouched(t *testing.T, host, before string, mountsBefore []string, volumeTrace bool) {
	t.Helper()
	if volumeTrace && emptyDir(filepath.Join(host, "northstar")) {
		if err := os.Remove(filepath.Join(host, "northstar")); err != nil {
			t.Fatal(err)
		}
	}
	if after := testtree.Snapshot(host); after != before {
		t.Errorf("host directory changed:\nbefore:\n%safter:\n%s", before, after)
	}
	if got := mountsUnder(host); len(got) != len(mountsBefore) {
		t.Errorf("mounts on the host directory: %v, before %v", got, mountsBefore)
	}
}

// hostileSite is the victim directory of one image of the attack table,
// as it was before the image ran, and the image's root filesystem.
type hostileSite struct {
	host, rootfs string
	before       string   // testtree.Snapshot of host
	mountsBefore []string // mountsUnder host
}

// newHostileSite makes a victim directory (victimDir), notes it and the
// mounts below it, and builds tt's image at rootfs ("": beside the
// victim directory): busybox, then the image's lines, which may name the
// victim directory.
func newHostileSite(t *testing.T, tt hostileImage, rootfs string) hostileSite {
	t.Helper()
	host := victimDir(t)
	s := hostileSite{host: host, rootfs: rootfs, before: testtree.Snapshot(host), mountsBefore: mountsUnder(host)}
	if s.rootfs == "" {
		s.rootfs = filepath.Join(filepath.Dir(host), "rootfs")
	}
	mkBusybox(t, s.rootfs)
	if err := testtree.Build(s.rootfs, host, tt.image); err != nil {
		t.Fatal(err)
	}
	return s
}

// untouched is hostUntouched for the site.
func (s hostileSite) untouched(t *testing.T, volumeTrace bool) {
	t.Helper()
	hostUntouched(t, s.host, s.before, s.mountsBefore, volumeTrace)
}
