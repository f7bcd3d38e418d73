// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/client"
)

// runtimeMounts returns the mounts of the OCI spec containerd made for a
// container (crictl inspect), by destination.
func (c *criContainerd) runtimeMounts(t *testing.T, id string) map[string][]string {
	t.Helper()
	var info struct {
		Info struct {
			RuntimeSpec struct {
				Mounts []struct {
					Destination string   `json:"destination"`
					Options     []string `json:"options"`
				} `json:"mounts"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(c.mustCrictl(t, "inspect", "-o", "json", id)), &info); err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, x := range info.Info.RuntimeSpec.Mounts {
		m[x.Destination] = x.Options
	}
	return m
}

// TestNRIMountsNoHook: with the agent's NRI plugin, no process runs on a
// Kubernetes container's start path: the spec containerd makes has no
// northstar hook, and the secret and the API directory are bind mounts
// the runtime made of what the agent built (read-only, nosuid, nodev,
// noexec). The container still follows a rotation, is cut off by a
// revocation (secret gone, API closed), and leaves nothing on the host
// when it goes.
func TestNRIMountsNoHook(t *testing.T) {
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	e, sock, _ := nriEnv(t)
	a := startAgent(t, e, sock)
	c := startNRIContainerd(t, e, a, "containerd 2.4.2 (NRI, no hook)")
	p := c.runPod(t, "web")
	app := c.runContainer(t, p, "app")
	bad := c.runContainer(t, p, "bad")
	if c.hasNorthstarHook(t, app) {
		t.Fatal("the container's spec runs the northstar hook; want the agent's mounts and no hook")
	}
	mounts := c.runtimeMounts(t, app)
	for _, dest := range []string{"/run/northstar", "/run/northstar/api"} {
		opts := strings.Join(mounts[dest], ",")
		for _, want := range []string{"ro", "nosuid", "nodev", "noexec"} {
			if !strings.Contains(","+opts+",", ","+want+",") {
				t.Errorf("the runtime mount at %s has options %q, want %s", dest, opts, want)
			}
		}
	}
	appPid, badPid := c.pid(t, "inspect", app), c.pid(t, "inspect", bad)
	had := e.secretHex(t)
	if got := secretOf(t, appPid); got != had {
		t.Fatalf("the container read %q, want the store's %s", got, had)
	}
	if got, err := client.New(filepath.Join(registeredDir(t, sock, app), "api.sock")).Identity(context.Background()); err != nil || got.Identity != "default/web/app" {
		t.Errorf("the API identity: %+v, %v; want default/web/app", got, err)
	}
	// In the container: the file is read-only to it.
	if r := c.crictl(t, "exec", app, "sh", "-c", "echo x > /run/northstar/secret"); r.err == nil {
		t.Errorf("the container wrote its secret:\n%s", r)
	}
	if r := c.crictl(t, "exec", app, "sh", "-c", "test -S /run/northstar/api/api.sock"); r.err != nil {
		t.Errorf("no API socket in the container:\n%s", r)
	}
	checkNRIAPIFilesystem(t, e, c, p, sock, app)

	// A rotation revoking one of them: the other follows, this one loses
	// its secret and its API.
	badDir := registeredDir(t, sock, bad)
	if r := e.ctl(t, "rotate", "--revoke", bad); r.err != nil {
		t.Fatalf("rotate --revoke:\n%s", r)
	}
	followed(t, appPid, e.secretHex(t), "")
	for deadline := time.Now().Add(2 * time.Second); secretOf(t, badPid) != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the revoked container still reads a secret 2 s after the rotation")
		}
	}
	if _, err := client.New(filepath.Join(badDir, "api.sock")).Identity(context.Background()); err == nil {
		t.Error("the revoked container's API still answers")
	}

	// A restarted agent takes the container back (the runtime's mount of
	// its filesystem, by unique mount id) and rotates it.
	if err := a.stop(t); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.out)
	}
	a = startAgent(t, e, sock)
	had = e.secretHex(t)
	if r := e.ctl(t, "rotate"); r.err != nil {
		t.Fatalf("rotate:\n%s", r)
	}
	followed(t, appPid, e.secretHex(t), had)

	// Gone: nothing of them stays on the host, staging mounts and API
	// filesystems included.
	c.mustCrictl(t, "rm", "-f", app, bad)
	containers := filepath.Dir(badDir)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := mountsUnder(containers)
		registered := append(registeredDirs(t, sock, app), registeredDirs(t, sock, bad)...)
		if len(registered) == 0 && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the containers went: registered %v, mounts left under %s: %v", registered, containers, left)
		}
	}
}

// checkNRIAPIFilesystem: the API directory handed to an NRI container is
// a capped tmpfs of its own (DESIGN.md §15), on the host and in the
// container, and mallory, in the same pod with CAP_SYS_ADMIN, who
// remounts hers read-write and writes a megabyte there, fills her own
// 16 KiB and nothing of the agent's.
func checkNRIAPIFilesystem(t *testing.T, e *env, c *criContainerd, p pod, sock, app string) {
	t.Helper()
	dir := registeredDir(t, sock, app)
	var st, parent unix.Statfs_t
	var sd, pd unix.Stat_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(unix.Statfs(filepath.Dir(dir), &parent), unix.Stat(dir, &sd), unix.Stat(filepath.Dir(dir), &pd)); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC || st.Blocks*uint64(st.Bsize) > 16<<10 || sd.Dev == pd.Dev {
		t.Errorf("the API directory %s is not a filesystem of its own of at most 16 KiB (type %#x, %d bytes, device %d, its parent's %d)",
			dir, st.Type, st.Blocks*uint64(st.Bsize), sd.Dev, pd.Dev)
	}
	if r := c.crictl(t, "exec", app, "grep", " /run/northstar/api ", "/proc/self/mountinfo"); r.err != nil || !strings.Contains(r.stdout, " - tmpfs northstar-api ") {
		t.Errorf("/run/northstar/api in the container is not the API filesystem:\n%s", r)
	}

	c.seq++
	cfg := map[string]any{
		"metadata": map[string]any{"name": "mallory"},
		"image":    map[string]any{"image": criImage},
		"log_path": "mallory.log",
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"pid": 1},
			"capabilities":      map[string]any{"add_capabilities": []string{"SYS_ADMIN"}},
			"seccomp":           map[string]any{"profile_type": 1}, // unconfined
			"apparmor":          map[string]any{"profile_type": 1},
		}},
	}
	mallory := c.mustCrictl(t, "create", p.id, c.writeJSON(t, fmt.Sprintf("ctr-mallory-%d.json", c.seq), cfg), p.config)
	c.mustCrictl(t, "start", mallory)
	defer c.crictl(t, "rm", "-f", mallory)
	r := c.crictl(t, "exec", mallory, "sh", "-c", `mount -o remount,rw /run/northstar/api || mount -o remount,bind,rw /run/northstar/api
echo "remount: $?"
dd if=/dev/zero of=/run/northstar/api/planted bs=1k count=1024 2>/dev/null
echo "planted: $(wc -c < /run/northstar/api/planted)"`)
	t.Logf("mallory with CAP_SYS_ADMIN got:\n%s", r)
	if !strings.Contains(r.stdout, "remount: 0") {
		t.Fatalf("mallory's remount failed: the test does not test:\n%s", r)
	}
	if n, err := strconv.Atoi(field(strings.ReplaceAll(r.stdout, "planted: ", "planted="), "planted")); err != nil || n > 16<<10 {
		t.Errorf("mallory planted %d bytes (%v) in her API directory, want at most its 16 KiB cap", n, err)
	}
	// Nothing of hers on the agent's filesystems: where her file shows on
	// the host, it is on her capped tmpfs.
	for _, root := range []string{filepath.Dir(sock), filepath.Join(e.dir, "state")} {
		_ = filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Name() == "planted" {
				var st unix.Statfs_t
				if unix.Statfs(path, &st) != nil || st.Type != unix.TMPFS_MAGIC || st.Blocks*uint64(st.Bsize) > 16<<10 {
					t.Errorf("mallory's file landed on a filesystem of the agent's: %s", path)
				}
			}
			return nil
		})
	}
}

// TestNRIHostileImages runs the hook's attack table (hostile_test.go)
// through NRI, where the runtime (runc's own mount code) mounts what the
// agent built and the agent checks, before the container's process runs,
// where the runtime mounted it (mount.CheckMounted). Every image either
// reads its secret or does not start, and nothing of it reaches the host
// but what the container could do itself: runc, following an image's
// symlink into a writable volume, may leave an empty directory there
// before the agent refuses the start (docs/security.md).
func TestNRIHostileImages(t *testing.T) {
	requiresFile(t, filepath.Join(containerd2Bin, "containerd"), "scripts/install-tools.sh builds it")
	e, sock, _ := nriEnv(t)
	a := startAgent(t, e, sock)
	c := startNRIContainerd(t, e, a, "containerd 2.4.2 (NRI, hostile images)")
	p := c.runPod(t, "hostile")
	want := e.secretHex(t)
	for i, tt := range append(hostileImages, mountTargetImages...) {
		if tt.runTmpfs {
			continue // a spec's /run tmpfs: CRI makes none (the hook's case)
		}
		t.Run(tt.name, func(t *testing.T) {
			site := newHostileSite(t, tt, filepath.Join(c.dir, fmt.Sprintf("hostile-%d", i)))
			image := fmt.Sprintf("localhost/northstar-hostile-%d:latest", i)
			tar := site.rootfs + ".tar"
			mk := exec.Command("../scripts/mkimage.sh", site.rootfs, image, tar)
			mk.Env = append(os.Environ(), `IMAGE_CMD=["/bin/sh","-c","trap 'exit 0' TERM; while :; do sleep 1; done"]`)
			mustRun(t, mk)
			mustRun(t, c.command("ctr", "--address", c.sock, "--namespace", "k8s.io", "images", "import", tar))
			// CRI learns of an imported image from an event, a moment later.
			for deadline := time.Now().Add(10 * time.Second); c.crictl(t, "inspecti", image).err != nil; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("CRI does not know the image %s 10 s after its import", image)
				}
			}
			c.seq++
			cfg := map[string]any{
				"metadata": map[string]any{"name": fmt.Sprintf("h%d", i)},
				"image":    map[string]any{"image": image},
				"log_path": fmt.Sprintf("h%d.log", i),
			}
			if tt.volume {
				cfg["mounts"] = []map[string]any{{"container_path": "/vol", "host_path": site.host}}
			}
			id := c.mustCrictl(t, "create", p.id, c.writeJSON(t, fmt.Sprintf("ctr-h%d.json", i), cfg), p.config)
			defer c.crictl(t, "rm", "-f", id)
			r := c.crictl(t, "start", id)
			refuse := tt.refuse || replaces(tt.image, "symlink", "run", "run/northstar")
			switch {
			case refuse && r.err == nil:
				t.Errorf("container started, want the start refused:\n%s", r)
			case refuse && !strings.Contains(r.stderr, "northstar: container") && !strings.Contains(r.stderr, "runc create failed"):
				t.Errorf("the refusal names neither the agent's check nor the runtime:\n%s", r)
			case !refuse && r.err != nil:
				t.Errorf("container did not start:\n%s", r)
			case !refuse:
				if got := c.crictl(t, "exec", id, "cat", "/run/northstar/secret"); got.err != nil || got.stdout != want {
					t.Errorf("container did not read its secret:\n%s", got)
				}
			}
			if refuse {
				t.Logf("refused: %s", refusal(r.stderr))
				if dirs := registeredDirs(t, sock, id); len(dirs) != 0 {
					t.Errorf("a refused container is registered with the agent: %v", dirs)
				}
			}
			site.untouched(t, tt.volume)
		})
	}
}

// victimDir is a host directory, writable by anyone (the rootless
// tests' user included), holding one file: what a hostile image aims at.
func victimDir(t *testing.T) string {
	t.Helper()
	host := filepath.Join(worldDir(t), "host")
	if err := os.MkdirAll(host, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(host, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "victim"), []byte("host file"), 0o644); err != nil {
		t.Fatal(err)
	}
	return host
}

// replaces reports whether an image (testtree lines) puts one of kinds
// (space-separated: "symlink", "file", "dir") at one of paths. Through
// NRI a symlink at run or run/northstar refuses the start: the runtime
// follows it (inside the rootfs), the agent's check, which follows none,
// refuses.
func replaces(image []string, kinds string, paths ...string) bool {
	for _, l := range image {
		if f := strings.Fields(l); len(f) >= 2 && slices.Contains(strings.Fields(kinds), f[0]) && slices.Contains(paths, f[1]) {
			return true
		}
	}
	return false
}

// emptyDir reports whether dir is an empty directory: what runc's mkdir
// leaves in a volume an image's symlink sent it to.
func emptyDir(dir string) bool {
	ents, err := os.ReadDir(dir)
	return err == nil && len(ents) == 0
}

// refusal is the part of a failed start's error that says who refused it.
func refusal(stderr string) string {
	for _, who := range []string{"northstar: container", "runc create failed"} {
		if i := strings.Index(stderr, who); i >= 0 {
			s := stderr[i:]
			if j := strings.IndexAny(s, "\n\""); j >= 0 {
				s = s[:j]
			}
			return s
		}
	}
	return stderr
}
