//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/internal/testtree"
)

// hostileImages are images that try to make the hook write or mount outside
// their rootfs. $HOST is a directory on the host. The hook must either
// refuse (the container does not start, the error names northstar) or put
// the secret inside the container's own rootfs; the host stays untouched.
var hostileImages = []struct {
	name   string
	image  []string
	refuse bool
}{
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

func TestRuncHostileImages(t *testing.T) {
	requires(t, "runc")
	e := newEnv(t, "", nil)
	want := e.secretHex(t)
	for _, tt := range hostileImages {
		t.Run(tt.name, func(t *testing.T) {
			host := filepath.Join(worldDir(t), "host")
			if err := os.MkdirAll(host, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(host, "victim"), []byte("host file"), 0o644); err != nil {
				t.Fatal(err)
			}
			before, mountsBefore := testtree.Snapshot(host), hostMounts(t)

			b := newBundle(t, e.dir, false, `cat /run/northstar/secret`).withHook("createRuntime", e.config)
			if err := testtree.Build(b.rootfs, host, tt.image); err != nil {
				t.Fatal(err)
			}
			r := b.runcRun(t)
			switch {
			case tt.refuse && r.err == nil:
				t.Errorf("container started, want the hook to refuse it:\n%s", r)
			case tt.refuse && (!strings.Contains(r.stderr, "northstar-hook: mount: ") || !strings.Contains(r.stderr, "/run/northstar in the container rootfs")):
				t.Errorf("refusal does not name the cause:\n%s", r)
			case !tt.refuse && (r.err != nil || strings.TrimSpace(r.stdout) != want):
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
