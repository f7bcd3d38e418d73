// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/northstar-oci/northstar/internal/testtree"
)

// TestShimHostileImages runs the hook's attack table (hostile_test.go)
// through the shim: rootless containerd (Debian's 1.6) starts each image
// with `ctr run --runtime io.containerd.northstar.v2 --rootfs`, the shim
// puts the hook in its config.json, and the host directory stays as it
// was. containerd's default spec mounts a tmpfs at /run, which covers
// whatever an image plants below /run: those images get their secret.
// An image whose /run itself is a symlink or a file does not start: the
// hook refuses it, naming itself (the tmpfs landed elsewhere, and the
// secret may only go on the rootfs or a tmpfs at /run), or runc cannot
// mount the tmpfs at all.
func TestShimHostileImages(t *testing.T) {
	a := requiresContainerd(t)
	e := newEnv(t, "", a)
	c := startContainerd(t, a, "NORTHSTAR_CONFIG="+e.config)
	want := e.secretHex(t)
	for i, tt := range append(hostileImages, mountTargetImages...) {
		t.Run(tt.name, func(t *testing.T) {
			host := victimDir(t)
			before, mountsBefore := testtree.Snapshot(host), mountsUnder(host)
			rootfs := filepath.Join(filepath.Dir(host), "rootfs")
			mkBusybox(t, rootfs)
			if err := testtree.Build(rootfs, host, tt.image); err != nil {
				t.Fatal(err)
			}
			a.chownR(t, rootfs)
			args := []string{"run", "--rm"}
			args = append(args, ctrRunFlags...)
			if tt.volume {
				args = append(args, "--mount", "type=bind,src="+host+",dst=/vol,options=rbind:rw")
			}
			if tt.runTmpfs {
				args = append(args, "--mount", "type=tmpfs,src=tmpfs,dst=/run,options=nosuid:nodev:mode=755")
			}
			args = append(args, "--runtime", northstarRuntime, "--rootfs", rootfs, c.newID(fmt.Sprintf("hostile%d", i)), "/bin/cat", "/run/northstar/secret")
			r := c.ctr(t, args...)
			refuse := replaces(tt.image, "symlink file", "run")
			byHook := strings.Contains(r.stderr, "northstar-hook: mount: ") &&
				(strings.Contains(r.stderr, "/run/northstar in the container rootfs") || strings.Contains(r.stderr, "refused mount target"))
			switch {
			case refuse && r.err == nil:
				t.Errorf("container started, want the start refused:\n%s", r)
			case refuse && !byHook && !strings.Contains(r.stderr, "OCI runtime create failed"):
				t.Errorf("refusal names neither the hook nor the runtime:\n%s", r)
			case !refuse && (r.err != nil || !strings.Contains(r.stdout, want)):
				t.Errorf("container did not read its secret:\n%s", r)
			}
			if after := testtree.Snapshot(host); after != before {
				t.Errorf("host directory changed:\nbefore:\n%safter:\n%s", before, after)
			}
			if got := mountsUnder(host); len(got) != len(mountsBefore) {
				t.Errorf("mounts on the host directory: %v, before %v", got, mountsBefore)
			}
		})
	}
}
