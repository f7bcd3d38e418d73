// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/remedy"
	"github.com/northstar-oci/northstar/secretfs"
	"github.com/northstar-oci/northstar/secretfs/mount"
)

// finding is one line of `northstarctl doctor`.
type finding struct {
	level string // "ok", "warn", "FAIL"
	what  string
	fix   string
	// next is set on a FAIL that a step after `setup` clears (the agent
	// not started yet): setup prints it as a next step, not a failure.
	next bool
}

// prober is implemented by sealers that can check their key is usable
// without unsealing anything (the TPM sealer: reachable, SRK usable).
type prober interface {
	Probe(ctx context.Context) error
}

func runDoctor(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "doctor", "[--config PATH] [--containerd BIN]")
	containerd := fs.String("containerd", "containerd", "the containerd binary to report (the one your runtime runs)")
	if _, err := parse(fs, env, args, 0); err != nil {
		return helpOK(err)
	}
	if printFindings(env, diagnose(ctx, *cfgPath, *containerd), false) {
		return errors.New("doctor found problems (see FAIL lines)")
	}
	return nil
}

// diagnose checks the kernel, the config at cfgPath (its sealer, state,
// agent and NRI socket) and the runtimes: runc and the containerd binary
// named (setup passes the one it wired).
func diagnose(ctx context.Context, cfgPath, containerd string) []finding {
	var fs []finding
	add := func(level, what, fix string) { fs = append(fs, finding{level: level, what: what, fix: fix}) }

	checkKernel(add)

	path := config.Discover(cfgPath)
	cfg, err := config.Load(path)
	if err != nil {
		add("FAIL", "config: "+err.Error(), "write a config (see README, 'Config reference') or pass --config")
	} else {
		add("ok", "config "+path+" is valid", "")
		checkStore(ctx, cfg, add)
		n := len(fs)
		checkAgent(cfg, add)
		for i := n; i < len(fs); i++ {
			fs[i].next = fs[i].level == "FAIL" && strings.HasPrefix(fs[i].what, "agent at ")
		}
		checkNRI(cfg, add)
		checkSPIRE(ctx, cfg, add)
	}
	for _, bin := range []string{"runc", containerd} {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			add("warn", bin+" not found", "install it (Debian: apt-get install "+filepath.Base(bin)+") if you use it")
			continue
		}
		add("ok", bin+": "+strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0], "")
	}
	return fs
}

// printFindings prints the findings, one a line with its fix under it,
// and reports whether one failed. With setup, a failure a next step
// clears is printed as "next" and does not count.
func printFindings(env *Env, fs []finding, setup bool) (failed bool) {
	for _, f := range fs {
		level := f.level
		if setup && f.next {
			level = "next"
		}
		fmt.Fprintf(env.Stdout, "%-4s  %s\n", level, f.what)
		if f.fix != "" {
			fmt.Fprintf(env.Stdout, "      fix: %s\n", f.fix)
		}
		failed = failed || level == "FAIL"
	}
	return failed
}

func checkStore(ctx context.Context, cfg *config.Config, add func(level, what, fix string)) {
	st, err := configured.Store(cfg)
	if err != nil {
		add("FAIL", "sealer: "+err.Error(), "check 'sealer' and [tpm] in the config")
		return
	}
	checkTPMPath(cfg, add)
	if cfg.Sealer == config.SealerHost {
		add("warn", "sealer \"host\": the secret is protected by a key file, not a TPM", "use sealer = \"tpm\" where the host has a TPM 2.0")
	}
	if p, ok := st.Sealer().(prober); ok {
		if err := p.Probe(ctx); err != nil {
			if nt := noTPM(cfg, err); nt != err {
				add("FAIL", nt.Error(), "")
				return
			}
			add("FAIL", "TPM "+cfg.TPM.Path+": "+err.Error(), "check [tpm] path and that the TPM (or swtpm) is running and accessible")
			return // unsealing would only repeat the error
		} else {
			add("ok", "TPM "+cfg.TPM.Path+" reachable, SRK usable", "")
		}
	}
	rec, err := st.Current()
	if err != nil {
		add("FAIL", "state: "+err.Error(), remedy.For(err))
		return
	}
	sec, _, err := st.Secret(ctx)
	if err != nil {
		add("FAIL", "unseal: "+err.Error(), cmp.Or(remedy.For(err), "check the error above; "+remedy.Rotate+" seals a new secret"))
		return
	}
	sec.Zero()
	add("ok", fmt.Sprintf("secret generation %d unseals (sealer %s)", rec.Generation, rec.Sealer), "")
}

// checkAgent checks what the agent and, with [api] enable, the agent
// need: a kernel that tells a client's mount namespace, and an agent
// answering (with the API on, container starts fail without it).
func checkAgent(cfg *config.Config, add func(level, what, fix string)) {
	if cfg.Agent.Socket == "" {
		return
	}
	level := "warn" // the agent is an optimization: hooks fall back to the TPM
	if cfg.API.Enable {
		level = "FAIL" // the agent: API containers do not start without it
	}
	if err := control.CheckPeerSupport(); err != nil {
		add(level, "agent peer checks: "+err.Error()+"; the agent would refuse every hook", "a kernel with SO_PEERPIDFD (6.5+) and PIDFD_GET_MNT_NAMESPACE (6.11+)")
	} else {
		add("ok", "agent peer checks (SO_PEERPIDFD, PIDFD_GET_MNT_NAMESPACE)", "")
	}
	c, err := net.DialTimeout("unixpacket", cfg.Agent.Socket, time.Second)
	if err != nil {
		fix := "start 'northstarctl agent' where the runtime runs (contrib/systemd/northstar-agent.service; rootless: in the runtime's namespaces, see README)"
		if cfg.API.Enable {
			add(level, fmt.Sprintf("agent at %s: %v; with [api] enable, container starts fail while it is down", cfg.Agent.Socket, unwrapErrno(err)), fix)
		} else {
			add(level, fmt.Sprintf("agent at %s: %v; hooks unseal from the TPM at every start", cfg.Agent.Socket, unwrapErrno(err)), fix)
		}
		return
	}
	c.Close()
	add("ok", "agent at "+cfg.Agent.Socket+" accepts connections", "")
}

// checkNRI checks the runtime end of the agent's NRI plugin ([nri]
// enable): the socket it connects to.
func checkNRI(cfg *config.Config, add func(level, what, fix string)) {
	if !cfg.NRI.Enable {
		return
	}
	if fi, err := os.Stat(cfg.NRI.Socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		add("warn", "NRI socket "+cfg.NRI.Socket+" is not there: no runtime sends the agent's plugin containers (containerd 2.x not running, or NRI off)",
			"'northstarctl setup containerd' turns NRI on at this socket; then restart containerd")
		return
	}
	add("ok", "NRI socket "+cfg.NRI.Socket+" (the agent's plugin connects to it)", "")
}

// unwrapErrno shortens "dial unixpacket /x: connect: no such file" to its
// errno.
func unwrapErrno(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// checkTPMPath warns about TPM paths other local users can reach: swtpm's
// data channel answers whoever connects, and a process that gets between
// northstar and the TPM can stall every container start (or try to pose as
// the TPM; the SRK name pins the key only after the first seal).
func checkTPMPath(cfg *config.Config, add func(level, what, fix string)) {
	if cfg.Sealer != config.SealerTPM {
		return
	}
	switch p := cfg.TPM.Path; {
	case strings.HasPrefix(p, "tcp:"):
		add("warn", "TPM "+p+": a TCP port is reachable by every local process", `run swtpm on a unix socket in a 0700 directory and set [tpm] path = "unix:/that/dir/sock"`)
	case strings.HasPrefix(p, "unix:"):
		dir := filepath.Dir(strings.TrimPrefix(p, "unix:"))
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
			add("warn", fmt.Sprintf("TPM %s: its directory %s has mode %04o, so other users can reach or replace the socket", p, dir, fi.Mode().Perm()), "chmod 0700 "+dir)
		}
	}
}

// checkKernel probes the kernel features the hook relies on, by using them.
func checkKernel(add func(level, what, fix string)) {
	if f, err := secretfs.NewSealedMemfd("doctor", []byte("x")); err != nil {
		add("FAIL", "memfd sealing: "+err.Error(), "a kernel with memfd_create and F_ADD_SEALS (3.17+)")
	} else {
		f.Close()
		add("ok", "memfd sealing", "")
	}
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	if fd, err := unix.Openat2(unix.AT_FDCWD, "/", &how); err != nil {
		add("warn", "openat2: "+err.Error(), "kernel 5.6+ resolves container paths in-kernel; the fallback is slower")
	} else {
		unix.Close(fd)
		add("ok", "openat2 (RESOLVE_IN_ROOT)", "")
	}
	if root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0); err == nil {
		if _, err := mount.UniqueID(root); err != nil {
			add("warn", "unique mount ids: "+err.Error()+"; a rotation reaches running containers only until the agent restarts", "kernel 6.8+ (statx STATX_MNT_ID_UNIQUE)")
		} else {
			add("ok", "unique mount ids (the agent finds its containers' mounts again after a restart)", "")
		}
		unix.Close(root)
	}
	fd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	switch {
	case errors.Is(err, unix.ENOSYS):
		add("FAIL", "new mount API (fsopen/fsmount/move_mount): not supported", "kernel 5.2+ (mount_setattr and nosymfollow: 5.14+)")
		return
	case errors.Is(err, unix.EPERM):
		add("warn", "new mount API: cannot check without CAP_SYS_ADMIN", "run 'northstarctl doctor' as root (or the runtime's user)")
		return
	case err != nil:
		add("FAIL", "fsopen tmpfs: "+err.Error(), "a kernel with tmpfs and the new mount API")
		return
	}
	defer unix.Close(fd)
	add("ok", "new mount API (fsopen/fsmount/move_mount)", "")
	if err := unix.FsconfigSetFlag(fd, "noswap"); err != nil {
		add("warn", "tmpfs noswap: "+err.Error()+"; the secret falls back to ramfs (never swapped) or a swappable tmpfs", "kernel 6.4+ for tmpfs noswap")
	} else {
		add("ok", "tmpfs noswap (the secret file never reaches swap)", "")
	}
}
