// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	shimHostile(t, a, c, "/bin/cat /run/northstar/secret", func(t *testing.T, tt hostileImage, r result) {
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
	}, false)
}

// shimHostile starts a container of each image of the attack table
// through the shim under c (`ctr run --rm` running script), hands the
// result to check, and checks that the host directory and the host's
// mounts below it stayed as they were; with trace, but for the empty
// northstar directory runc may make in a writable volume an image
// symlinks to.
func shimHostile(t *testing.T, a *account, c *rootlessContainerd, script string, check func(t *testing.T, tt hostileImage, r result), trace bool) {
	for i, tt := range append(hostileImages, mountTargetImages...) {
		t.Run(tt.name, func(t *testing.T) {
			site := newHostileSite(t, tt, "")
			a.chownR(t, site.rootfs)
			args := []string{"run", "--rm"}
			args = append(args, ctrRunFlags...)
			if tt.volume {
				args = append(args, "--mount", "type=bind,src="+site.host+",dst=/vol,options=rbind:rw")
			}
			if tt.runTmpfs {
				args = append(args, "--mount", "type=tmpfs,src=tmpfs,dst=/run,options=nosuid:nodev:mode=755")
			}
			args = append(args, "--runtime", northstarRuntime, "--rootfs", site.rootfs, c.newID(fmt.Sprintf("hostile%d", i)), "/bin/sh", "-c", script)
			check(t, tt, c.ctr(t, args...))
			site.untouched(t, trace && tt.volume)
			if got := c.mountsUnder(t, site.host); len(got) != 0 {
				t.Errorf("mounts on the host directory in the runtime's namespace: %v", got)
			}
		})
	}
}

// mountsUnder lists the mounts below dir in the runtime's (and the
// agent's) mount namespace: rootlesskit's, as its child holding the
// namespaces sees it. Not the agent's /proc/PID/mountinfo: that is its
// main thread's view, and a check that ran on the main thread in a
// container's mount namespace (internal/nsenter) leaves it there: Go
// never ends the main thread, it parks it.
func (c *rootlessContainerd) mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "rootlesskit", "child_pid"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/" + strings.TrimSpace(string(b)) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], dir+"/") {
			ms = append(ms, fs[4])
		}
	}
	return ms
}
