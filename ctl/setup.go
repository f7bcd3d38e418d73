package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/setup"
	"github.com/northstar-oci/northstar/store"
)

// Where setup looks and writes by default.
const (
	defaultContainerdConfig = "/etc/containerd/config.toml"
	defaultHooksDir         = "/etc/containers/oci/hooks.d"
	packageHooksDir         = "/usr/share/containers/oci/hooks.d"
	hooksFile               = "northstar.json"
)

// setupFlags are the flags of `northstarctl setup`.
type setupFlags struct {
	dryRun, failOpen, dockerDefault                             bool
	runtimeConfig, dropIns, containerd, cri, hooksD, daemonJSON string
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
	fs.StringVar(&f.hooksD, "hooks-dir", defaultHooksDir, "podman: the hooks.d directory for "+hooksFile)
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
	return applySetup(ctx, env, pos[0], cfg, plan, f.dryRun)
}

// applySetup prints and (unless dryRun) writes the plan, initialises the
// state and runs doctor.
func applySetup(ctx context.Context, env *Env, target string, cfg *config.Config, plan *setup.Plan, dryRun bool) error {
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
	if len(plan.Changes) == 0 {
		fmt.Fprintf(env.Stdout, "%s: wired already, nothing changed\n", target)
	}
	if !initialized {
		if err := runInit(ctx, env, []string{"--config", cfg.Path}); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	for _, n := range plan.Notes {
		fmt.Fprintln(env.Stdout, n)
	}
	if len(plan.Changes) > 0 && target == "containerd" {
		fmt.Fprintln(env.Stdout, "restart containerd to load it (systemctl restart containerd); setup does not restart your runtime")
	}
	fmt.Fprintln(env.Stdout, "\nnorthstarctl doctor:")
	return runDoctor(ctx, env, []string{"--config", cfg.Path})
}

// planContainerd plans containerd's wiring for the containerd binary
// f.containerd.
func planContainerd(cfg *config.Config, f *setupFlags) (*setup.Plan, error) {
	bin, err := exec.LookPath(f.containerd)
	if err != nil {
		return nil, fmt.Errorf("%s not found (install containerd, or name its binary with --containerd)", f.containerd)
	}
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

// planPodman plans the hooks.d file: nothing when the package's file (or
// one in f.hooksD) says the same already.
func planPodman(cfg *config.Config, f *setupFlags) (*setup.Plan, error) {
	data, err := json.MarshalIndent(hooksDoc(installedPath(entry.Name), cfg.Path), "", "  ")
	if err != nil {
		return nil, err
	}
	want := append(data, '\n')
	plan := &setup.Plan{Notes: []string{"podman runs the hook for every container it starts from now on (rootful; rootless podman: ~/.config/containers/oci/hooks.d)"}}
	path := filepath.Join(f.hooksD, hooksFile)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err == nil && string(old) == string(want) {
		return plan, nil
	}
	if pkg, perr := os.ReadFile(filepath.Join(packageHooksDir, hooksFile)); f.hooksD == defaultHooksDir && perr == nil && string(pkg) == string(want) && old == nil {
		return plan, nil // the package's file, and nothing in /etc overrides it
	}
	plan.Changes = append(plan.Changes, setup.Change{Path: path, Old: old, New: want, Mode: 0o644, Why: "the hook for every podman container"})
	return plan, nil
}
