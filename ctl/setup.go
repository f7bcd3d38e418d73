// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/internal/atomicfile"
	"github.com/northstar-oci/northstar/setup"
	"github.com/northstar-oci/northstar/store"
)

// Where setup looks and writes by default.
const (
	defaultContainerdConfig = "/etc/containerd/config.toml"
	hooksFile               = "northstar.json"
)

// setupFlags are the flags of `northstarctl setup`.
type setupFlags struct {
	dryRun, failOpen, dockerDefault                             bool
	runtimeConfig, dropIns, containerd, cri, hooksD, daemonJSON string
	podman                                                      string
}

func runSetup(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "setup", "containerd|docker|podman|runc [--config PATH] [--dry-run] [flags]")
	var f setupFlags
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would change and change nothing")
	fs.StringVar(&f.runtimeConfig, "runtime-config", defaultContainerdConfig, "containerd: its config file")
	fs.StringVar(&f.dropIns, "drop-in-dir", "", "containerd 2.1+: the directory of drop-ins the config imports (default: conf.d beside --runtime-config)")
	fs.StringVar(&f.containerd, "containerd", "containerd", "containerd: the binary whose version decides how to wire it")
	fs.StringVar(&f.cri, "cri", "", "containerd: how Kubernetes (CRI) containers get the hook: nri (the agent's NRI plugin; default on containerd 2.x) or runtime-class (a runtime handler \"northstar\"; default on 1.x)")
	fs.BoolVar(&f.failOpen, "fail-open", false, "containerd 2.2+: leave the plugin out of required_plugins, so pods start without the secret while it is away")
	fs.StringVar(&f.hooksD, "hooks-dir", "", "podman: the hooks.d directory for "+hooksFile+" (default: the one podman reads, as 'podman --help' says)")
	fs.StringVar(&f.podman, "podman", "podman", "podman: the binary to ask where it reads hooks")
	fs.StringVar(&f.daemonJSON, "daemon-json", defaultDaemonJSON, "docker: dockerd's config file")
	fs.BoolVar(&f.dockerDefault, "default", false, "docker: make northstar dockerd's default runtime (docker run --runtime runc opts out)")
	pos, err := parse(fs, env, args, 1)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: setup needs a runtime: containerd, docker, podman or runc", ErrUsage)
	}
	path, err := filepath.Abs(config.Discover(*cfgPath))
	if err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	var plan *setup.Plan
	switch pos[0] {
	case "containerd":
		plan, err = planContainerd(cfg, &f)
	case "docker":
		plan, err = planDocker(cfg, &f)
	case "podman":
		plan, err = planPodman(cfg, &f)
	case "runc":
		plan = &setup.Plan{Notes: []string{"runc and crun have no global hook configuration: add the hook to each bundle's config.json ('northstarctl config runc' prints it)"}}
	default:
		return fmt.Errorf("%w: setup: unknown runtime %q: want containerd, docker, podman or runc", ErrUsage, pos[0])
	}
	var pe *setup.ParseError
	if errors.As(err, &pe) {
		fix := "--runtime-config"
		if pos[0] == "docker" {
			fix = "--daemon-json"
		}
		return fmt.Errorf("setup %s: %w; fix the file or pass %s", pos[0], err, fix)
	}
	if err != nil {
		return fmt.Errorf("setup %s: %w", pos[0], err)
	}
	return applySetup(ctx, env, pos[0], cfg, plan, f.dryRun, f.containerd)
}

// applySetup prints and (unless dryRun) writes the plan, initialises the
// state, runs doctor (on the containerd binary named) and prints the steps
// left to the user: starting the agent, restarting the runtime. It fails
// only on what those steps do not fix.
func applySetup(ctx context.Context, env *Env, target string, cfg *config.Config, plan *setup.Plan, dryRun bool, containerd string) error {
	_, st, err := openStore(cfg.Path)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	_, cerr := st.Current()
	initialized := cerr == nil
	if cerr != nil && !errors.Is(cerr, store.ErrNotInitialized) {
		return fmt.Errorf("setup: %w", cerr)
	}
	if dryRun {
		for _, c := range plan.Changes {
			c.Describe(env.Stdout)
		}
		if len(plan.Changes) == 0 {
			fmt.Fprintf(env.Stdout, "%s: wired already, nothing to change\n", target)
		}
		if !initialized {
			fmt.Fprintf(env.Stdout, "would initialize %s (northstarctl init)\n", st.Dir())
		}
		fmt.Fprintln(env.Stdout, "dry run: nothing was changed")
		return nil
	}
	backups, err := setup.Apply(plan.Changes, time.Now())
	for _, b := range backups {
		fmt.Fprintf(env.Stdout, "backed up %s\n", b)
	}
	if err != nil {
		return fmt.Errorf("setup %s: %w", target, err)
	}
	for _, c := range plan.Changes {
		fmt.Fprintf(env.Stdout, "wrote %s (%s)\n", c.Path, c.Why)
	}
	if plan.Verify != nil {
		if err := plan.Verify(); err != nil {
			return fmt.Errorf("setup %s: %w", target, err)
		}
	}
	if len(plan.Changes) == 0 {
		fmt.Fprintf(env.Stdout, "%s: wired already, nothing changed\n", target)
	}
	if !initialized {
		if err := runInit(ctx, env, []string{"--config", cfg.Path}); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	if err := recordWired(st.Dir(), plan.Changes); err != nil {
		return fmt.Errorf("setup: record what it wrote: %w", err)
	}
	for _, n := range plan.Notes {
		fmt.Fprintln(env.Stdout, n)
	}
	fmt.Fprintln(env.Stdout, "\nnorthstarctl doctor:")
	findings := diagnose(ctx, cfg.Path, containerd)
	failed := printFindings(env, findings, true)
	// What is left is the user's to run: setup starts and restarts nothing.
	var next []string
	for _, f := range findings {
		if f.next {
			next = append(next, "start the agent: systemctl start northstar-agent (without systemd: northstarctl agent --config "+cfg.Path+", where the runtime runs)")
			break
		}
	}
	if len(plan.Changes) > 0 && target == "containerd" {
		next = append(next, "restart containerd to load its new config: systemctl restart containerd")
	}
	if len(next) > 0 {
		fmt.Fprintln(env.Stdout, "\nnext steps (setup starts and restarts nothing):")
		for i, n := range next {
			fmt.Fprintf(env.Stdout, "  %d. %s\n", i+1, n)
		}
	}
	if failed {
		return fmt.Errorf("setup %s: wired, but doctor found problems (see FAIL lines)", target)
	}
	return nil
}

// planContainerd plans containerd's wiring for the containerd binary
// f.containerd.
func planContainerd(cfg *config.Config, f *setupFlags) (*setup.Plan, error) {
	bin, err := exec.LookPath(f.containerd)
	if err != nil {
		return nil, fmt.Errorf("%s not found (install containerd, or name its binary with --containerd)", f.containerd)
	}
	f.containerd = bin // doctor reports this one, not the one on PATH
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", bin, err)
	}
	v, err := setup.ParseVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", bin, err)
	}
	// Absolute: containerd resolves a relative import against the
	// importing file's directory.
	if f.runtimeConfig, err = filepath.Abs(f.runtimeConfig); err != nil {
		return nil, err
	}
	if f.dropIns != "" {
		if f.dropIns, err = filepath.Abs(f.dropIns); err != nil {
			return nil, err
		}
	}
	c := &setup.Containerd{
		Config:    f.runtimeConfig,
		DropIns:   f.dropIns,
		Version:   v,
		CRI:       f.cri,
		FailOpen:  f.failOpen,
		NRISocket: cfg.NRI.Socket,
		Shim:      installedPath("containerd-shim-northstar-v2"),
		BaseSpec:  filepath.Join(filepath.Dir(f.runtimeConfig), "northstar-base-spec.json"),
	}
	if c.DropIns == "" {
		c.DropIns = filepath.Join(filepath.Dir(f.runtimeConfig), "conf.d")
	}
	if c.CRI == "" {
		c.CRI = setup.CRIRuntimeClass
		if v.Major >= 2 {
			c.CRI = setup.CRINRI
		}
	}
	if c.CRI == setup.CRINRI && !cfg.NRI.Enable {
		return nil, fmt.Errorf("--cri %s needs [nri] enable = true in %s (the agent runs the plugin); set it, or pass --cri %s", setup.CRINRI, cfg.Path, setup.CRIRuntimeClass)
	}
	if c.CRI == setup.CRIRuntimeClass && v.Major >= 2 {
		// containerd 2.x starts a pod's containers without the shim's
		// start: the runtime handler's base spec carries the hook.
		ctr := filepath.Join(filepath.Dir(bin), "ctr")
		if _, err := os.Stat(ctr); err != nil {
			ctr = "ctr"
		}
		if c.BaseSpecJSON, err = baseSpec(ctr, installedPath(entry.Name), cfg.Path); err != nil {
			return nil, err
		}
	}
	return c.Plan()
}

// wiredFiles is the list, in the state directory, of the files setup
// wrote that name northstar's binaries (containerd's drop-in, a hooks.d
// file), one path a line: the package's postrm removes them at `dpkg -r`
// (wherever --runtime-config or --hooks-dir put them), since they would
// point the runtime at a plugin or a hook that is gone.
const wiredFiles = "setup-files"

// recordWired adds the plan's drop-in and hooks.d files to wiredFiles.
func recordWired(stateDir string, changes []setup.Change) error {
	path := filepath.Join(stateDir, wiredFiles)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lines := strings.Fields(string(old))
	for _, c := range changes {
		if b := filepath.Base(c.Path); (b == setup.DropInName || b == hooksFile) && !slices.Contains(lines, c.Path) {
			lines = append(lines, c.Path)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return atomicfile.Write(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}
