// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/client"
)

// crictl is built by scripts/install-tools.sh.
var crictlBin = filepath.Join(toolsDir(), "crictl-v1.37.0", "crictl")

// criImage is the one image of the CRI tests, built from busybox with
// scripts/mkimage.sh and imported into containerd's k8s.io namespace: the
// pod sandbox ("pause") and the workloads. Its default command runs until
// SIGTERM, as a pause image must.
const criImage = "localhost/northstar/busybox:test"

// criContainerd is a rootful containerd with its Kubernetes CRI plugin, in
// a private directory, with the northstar runtime registered by the table
// `northstarctl config containerd` prints. Host-network pods need no CNI;
// restrict_oom_score_adj: no CAP_SYS_RESOURCE on this host (DESIGN.md §6).
type criContainerd struct {
	name string // for messages: "containerd 1.6 (Debian)"
	dir  string
	sock string
	bin  string // directory of containerd and its runc shim; "" = Debian's on PATH
	env  []string
	// handler is the runtime handler of new pods ("" for containerd's
	// default, runc).
	handler string
	cmd     *exec.Cmd
	exited  chan struct{}
	seq     int
}

// startCRIContainerd writes the config for the given config version (2:
// containerd 1.x, 3: 2.x) and starts containerd; e's config is the
// northstar config the shim and hook use.
func startCRIContainerd(t *testing.T, e *env, name, bin string, version int) *criContainerd {
	t.Helper()
	c := newCRIContainerd(t, e, name, bin)
	shim, err := shimBinary()
	if err != nil {
		t.Fatal(err)
	}
	snippet := mustRun(t, exec.Command(bins.ctl, "config", "containerd", "--config", e.config, "--config-version", fmt.Sprint(version))).stdout
	table := criTable(t, snippet)
	if !strings.Contains(table, shim) {
		t.Fatalf("the snippet's runtime_path is not the shim %s:\n%s", shim, table)
	}
	if version == 3 {
		// The base runtime spec, made as the snippet says, in the test's
		// directory instead of /etc/containerd.
		base := filepath.Join(c.dir, "northstar-base-spec.json")
		cmd := exec.Command(bins.ctl, "config", "base-spec", "--config", e.config)
		cmd.Env = c.env
		if err := os.WriteFile(base, []byte(mustRun(t, cmd).stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(table, "/etc/containerd/northstar-base-spec.json") {
			t.Fatalf("the containerd 2.x snippet names no base runtime spec:\n%s", table)
		}
		table = strings.ReplaceAll(table, "/etc/containerd/northstar-base-spec.json", base)
	}
	c.writeConfig(t, version, table)
	c.start(t)
	c.importImage(t)
	return c
}

// newCRIContainerd prepares a rootful containerd with its CRI plugin in a
// private directory (not started yet; cleanup removes it all), pods of
// the runtime handler "northstar".
func newCRIContainerd(t *testing.T, e *env, name, bin string) *criContainerd {
	t.Helper()
	requires(t, "containerd", "ctr", "runc")
	requiresFile(t, crictlBin, "scripts/install-tools.sh builds it")
	if _, err := shimBinary(); err != nil {
		t.Fatal(err)
	}
	// Short: unix socket paths live under it.
	dir, err := os.MkdirTemp("", "nscri-")
	if err != nil {
		t.Fatal(err)
	}
	c := &criContainerd{name: name, dir: dir, sock: filepath.Join(dir, "c.sock"), bin: bin, handler: "northstar"}
	path := bins.dir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if bin != "" {
		path = bins.dir + ":" + bin + ":" + path[len(bins.dir)+1:]
	}
	c.env = []string{"PATH=" + path, "NORTHSTAR_CONFIG=" + e.config, "HOME=/root"}
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

// configPath is the containerd config of c.
func (c *criContainerd) configPath() string { return filepath.Join(c.dir, "config.toml") }

// writeConfig writes containerd's config of the given version: private
// directories and sockets, the test image as the pause image, then extra.
func (c *criContainerd) writeConfig(t *testing.T, version int, extra string) {
	t.Helper()
	var cfg string
	switch version {
	case 2:
		cfg = fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[5]s/cni/bin"
    conf_dir = "%[5]s/cni/conf"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
%[6]s
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock, criImage, c.dir, extra)
	case 3:
		cfg = fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %[4]q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["%[5]s/cni/bin"]
    conf_dir = "%[5]s/cni/conf"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
%[6]s
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock, criImage, c.dir, extra)
	}
	if err := os.WriteFile(c.configPath(), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// importImage builds the test image and imports it for CRI.
func (c *criContainerd) importImage(t *testing.T) {
	t.Helper()
	rootfs := filepath.Join(c.dir, "image-rootfs")
	mkBusybox(t, rootfs)
	tar := filepath.Join(c.dir, "image.tar")
	mk := exec.Command("../scripts/mkimage.sh", rootfs, criImage, tar)
	mk.Env = append(os.Environ(), `IMAGE_CMD=["/bin/sh","-c","trap 'exit 0' TERM; while :; do sleep 1; done"]`)
	mustRun(t, mk)
	mustRun(t, c.command("ctr", "--address", c.sock, "--namespace", "k8s.io", "images", "import", tar))
}

// criTable cuts the runtime table (its header and indented lines) out of
// `northstarctl config containerd`: what a user pastes into config.toml.
func criTable(t *testing.T, snippet string) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(snippet, "\n") {
		if strings.HasPrefix(l, "[plugins.") {
			out = append(out, l)
			continue
		}
		if len(out) > 0 && strings.HasPrefix(l, "  ") {
			out = append(out, l)
			continue
		}
		if len(out) > 0 {
			break
		}
	}
	if len(out) < 3 {
		t.Fatalf("no runtime table in the snippet:\n%s", snippet)
	}
	return strings.Join(out, "\n")
}

func (c *criContainerd) command(name string, args ...string) *exec.Cmd {
	if c.bin != "" && (name == "ctr" || name == "containerd") {
		name = filepath.Join(c.bin, name)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	return cmd
}

// start runs containerd in its own session and waits until it answers.
func (c *criContainerd) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	c.cmd = c.command("containerd", "--config", c.configPath())
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(c.cmd, c.exited)
	for i := 0; ; i++ {
		if r := run(t, c.command("ctr", "--address", c.sock, "--timeout", "2s", "version")); r.err == nil {
			break
		}
		select {
		case <-c.exited:
			t.Fatalf("%s exited:\n%s", c.name, c.logTail())
		default:
		}
		if i == 300 {
			t.Fatalf("%s did not answer in 30s:\n%s", c.name, c.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The CRI plugin must have loaded (a config error only disables it).
	if r := c.crictl(t, "version"); r.err != nil {
		t.Fatalf("%s: no CRI service:\n%s\n%s", c.name, r, c.logTail())
	}
}

// stop ends containerd (SIGTERM); shims and containers keep running.
func (c *criContainerd) stop(t *testing.T) {
	t.Helper()
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// restart starts a new containerd process: a new runtime lifecycle.
func (c *criContainerd) restart(t *testing.T) {
	t.Helper()
	c.stop(t)
	c.start(t)
}

func (c *criContainerd) logTail() string {
	data, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// cleanup removes every pod, stops containerd and the shims it left,
// unmounts what is left under the directory and removes it.
func (c *criContainerd) cleanup(t *testing.T) {
	if c.cmd != nil {
		c.crictl(t, "rmp", "--all", "--force")
	}
	c.stop(t)
	// runc shims of this containerd carry its address in their argv.
	ents, _ := os.ReadDir("/proc")
	var shims []string
	for _, e := range ents {
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), c.sock) && strings.Contains(string(cmdline), "containerd-shim") {
			shims = append(shims, e.Name())
			exec.Command("kill", "-KILL", e.Name()).Run()
		}
	}
	if len(shims) > 0 {
		t.Errorf("%s: shims left after every pod was removed: %v", c.name, shims)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var under []string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], c.dir+"/") {
			under = append(under, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(under)))
	for _, m := range under {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	exec.Command("rm", "-rf", c.dir).Run()
}

// crictl runs crictl against this containerd.
func (c *criContainerd) crictl(t *testing.T, args ...string) result {
	t.Helper()
	all := append([]string{"--runtime-endpoint", "unix://" + c.sock, "--image-endpoint", "unix://" + c.sock, "--timeout", "30s"}, args...)
	cmd := exec.Command(crictlBin, all...)
	cmd.Env = c.env
	r := run(t, cmd)
	r.cmd = "crictl " + shellJoin(args)
	return r
}

func (c *criContainerd) mustCrictl(t *testing.T, args ...string) string {
	t.Helper()
	r := c.crictl(t, args...)
	if r.err != nil {
		t.Fatalf("%s:\n%s\n--- containerd log\n%s", c.name, r, c.logTail())
	}
	return strings.TrimSpace(r.stdout)
}

// pod is a running pod sandbox and the config it was made from.
type pod struct {
	id, config string
}

// runPod starts a host-network pod of c's runtime handler.
func (c *criContainerd) runPod(t *testing.T, name string) pod {
	t.Helper()
	args, p := c.podArgs(t, name, nil)
	p.id = c.mustCrictl(t, args...)
	return p
}

// podArgs are the crictl arguments that start a pod (and the pod whose id
// is still to be filled in), with annotations on the pod.
func (c *criContainerd) podArgs(t *testing.T, name string, annotations map[string]string) ([]string, pod) {
	t.Helper()
	c.seq++
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": fmt.Sprintf("uid-%s-%d", name, c.seq)},
		"log_directory": filepath.Join(c.dir, "logs", name),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		"annotations":   annotations,
	}
	p := pod{config: c.writeJSON(t, fmt.Sprintf("pod-%s-%d.json", name, c.seq), cfg)}
	args := []string{"runp"}
	if c.handler != "" {
		args = append(args, "--runtime", c.handler)
	}
	return append(args, p.config), p
}

// runContainer creates and starts a container of the busybox image in p.
func (c *criContainerd) runContainer(t *testing.T, p pod, name string) string {
	t.Helper()
	id := c.mustCrictl(t, c.createArgs(t, p, name, nil)...)
	c.mustCrictl(t, "start", id)
	return id
}

// createArgs are the crictl arguments that create a container in p, with
// annotations on the container.
func (c *criContainerd) createArgs(t *testing.T, p pod, name string, annotations map[string]string) []string {
	t.Helper()
	c.seq++
	cfg := map[string]any{
		"metadata":    map[string]any{"name": name},
		"image":       map[string]any{"image": criImage},
		"log_path":    name + ".log",
		"annotations": annotations,
		// A PID namespace of its own, as the kubelet asks unless the pod
		// sets shareProcessNamespace (CRI's default, POD, shares one).
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}},
	}
	return []string{"create", p.id, c.writeJSON(t, fmt.Sprintf("ctr-%s-%d.json", name, c.seq), cfg), p.config}
}

func (c *criContainerd) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pid returns the pid of a container (inspect) or pod sandbox (inspectp).
func (c *criContainerd) pid(t *testing.T, verb, id string) int {
	t.Helper()
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(c.mustCrictl(t, verb, "-o", "json", id)), &info); err != nil || info.Info.Pid <= 0 {
		t.Fatalf("%s %s: no pid (%v)", verb, id, err)
	}
	return info.Info.Pid
}

// secretOf reads /run/northstar/secret as the process pid sees it (through
// /proc/PID/root: its own mount namespace), or "" when it has none.
func secretOf(t *testing.T, pid int) string {
	t.Helper()
	return fileOf(t, pid, "secret")
}

// fileOf reads /run/northstar/NAME in the container of pid through
// /proc/PID/root ("" when there is none): a secret, 64 lowercase hex.
func fileOf(t *testing.T, pid int, name string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/northstar/%s", pid, name))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("read %s of pid %d: %v", name, pid, err)
	}
	if !isSecretHex(string(data)) {
		t.Fatalf("pid %d holds %q in %s, want 64 lowercase hex", pid, data, name)
	}
	return string(data)
}

// followed waits until the running container of pid reads want as its
// secret and had as the one before (live rotation: within 2 s of the
// rotation, DESIGN.md §12), and reports how long it waited.
func followed(t *testing.T, pid int, want, had string) time.Duration {
	t.Helper()
	t0 := time.Now()
	for deadline := t0.Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		cur, prev := fileOf(t, pid, "secret"), fileOf(t, pid, "secret.previous")
		if cur == want && prev == had {
			return time.Since(t0)
		}
		if time.Now().After(deadline) {
			t.Errorf("2 s after the rotation the running container of pid %d reads %q with %q before it; want %s, and %s before it", pid, cur, prev, want, had)
			return time.Since(t0)
		}
	}
}

// TestCRIPodsGetTheSecret: Kubernetes' CRI, through crictl against
// containerd's CRI plugin with the runtime handler "northstar" as
// `northstarctl config containerd` prints it, under Debian's containerd
// 1.6 and containerd 2.4.2 (rootful: see README for rootless CRI). A pod of
// two containers: both get the lifecycle secret, the pod's sandbox (pause)
// container none; a containerd restart rotates the secret for new pods while
// the running pod keeps its own.
func TestCRIPodsGetTheSecret(t *testing.T) {
	for _, flavor := range []struct {
		name, bin string
		version   int
	}{
		{"containerd 1.6 (Debian)", "", 2},
		{"containerd 2.4.2", containerd2Bin, 3},
	} {
		t.Run(flavor.name, func(t *testing.T) {
			if flavor.bin != "" {
				requiresFile(t, filepath.Join(flavor.bin, "containerd"), "scripts/install-tools.sh builds it")
			}
			// The agent runs too ([api] enable): pod containers get
			// their own API socket, named by CRI's names.
			e, sock := apiEnv(t)
			startAgent(t, e, sock)
			c := startCRIContainerd(t, e, flavor.name, flavor.bin, flavor.version)

			p1 := c.runPod(t, "web")
			a := c.runContainer(t, p1, "app")
			b := c.runContainer(t, p1, "sidecar")
			sa, sb := secretOf(t, c.pid(t, "inspect", a)), secretOf(t, c.pid(t, "inspect", b))
			if sa == "" || sa != sb {
				t.Fatalf("the pod's containers read %q and %q, want one secret", sa, sb)
			}
			if want := e.secretHex(t); sa != want {
				t.Fatalf("containers read %s, the store holds %s", sa, want)
			}
			if s := secretOf(t, c.pid(t, "inspectp", p1.id)); s != "" {
				t.Error("the pod sandbox (pause) container got the secret")
			}
			// Identity by CRI's names, asked on the container's own socket.
			if id, err := client.New(filepath.Join(registeredDir(t, sock, a), "api.sock")).Identity(context.Background()); err != nil || id.Identity != "default/web/app" {
				t.Errorf("the pod container's API identity: %+v, %v; want default/web/app", id, err)
			}
			if dirs := registeredDirs(t, sock, p1.id); len(dirs) != 0 {
				t.Errorf("the pod sandbox was registered with the agent: %v", dirs)
			}
			rec1 := e.record(t)

			c.restart(t)
			p2 := c.runPod(t, "web2")
			n := c.runContainer(t, p2, "app")
			sn := secretOf(t, c.pid(t, "inspect", n))
			if sn == "" || sn == sa || sn != e.secretHex(t) {
				t.Errorf("a pod after the containerd restart read %q; want the new lifecycle's secret", sn)
			}
			if rec2 := e.record(t); rec2.Generation != rec1.Generation+1 {
				t.Errorf("generation %d after the restart, want %d", rec2.Generation, rec1.Generation+1)
			}
			// The running pod's container follows (live rotation): the new
			// secret, and the one it had beside it.
			followed(t, c.pid(t, "inspect", a), sn, sa)
			// A pod container of the new lifecycle joins it; the old pod can
			// still start containers (they get the current secret).
			if s := secretOf(t, c.pid(t, "inspect", c.runContainer(t, p1, "late"))); s != sn {
				t.Errorf("a container started in the old pod after the restart read %q, want %s", s, sn)
			}
		})
	}
}
