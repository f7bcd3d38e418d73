// SPDX-License-Identifier: Apache-2.0

// Package ctl implements northstarctl, the administrator's command: create
// and rotate the lifecycle secret, show its status, check the host, and print
// the snippets that wire northstar into a runtime.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent"
	"github.com/northstar-oci/northstar/agent/api"
	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/agent/registry"
	"github.com/northstar-oci/northstar/agent/replay"
	"github.com/northstar-oci/northstar/audit"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/configured"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/hook/served"
	"github.com/northstar-oci/northstar/lifecycle"
	"github.com/northstar-oci/northstar/lifecycle/rotate"
	"github.com/northstar-oci/northstar/nri"
	"github.com/northstar-oci/northstar/remedy"
	"github.com/northstar-oci/northstar/store"
)

// ErrUsage marks command-line errors (exit code 2).
var ErrUsage = errors.New("usage")

// Env is what a subcommand may use; tests substitute its parts.
type Env struct {
	Stdout, Stderr io.Writer
	// ShimStarts, when set, is what the agent serves the containerd
	// shim's fast path with (agent.Options.ShimStarts, given the
	// agent's config): package shim/served, wired by the command's main,
	// since the shim's own tests run this package as their rotation child.
	ShimStarts func(reg *registry.Containers, cfg *config.Config, log io.Writer) (control.ShimStarter, error)
}

type command struct {
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"init":   {"create the state directory and the first sealed secret (no-op if present)", runInit},
		"rotate": {"seal a new lifecycle secret now (new generation), delivered to the running containers; --revoke ID cuts one off", runRotate},
		"revoke": {"revoke container ids (rotate --revoke), --list them, or --lift a revocation: a revoked id cannot start until lifted", runRevoke},
		"status": {"show sealer, generation, lifecycle id and creation time (never the secret), and the running containers the agent delivers to", runStatus},
		"doctor": {"check kernel features, TPM, runtimes and config; say what to fix", runDoctor},
		"setup":  {"wire northstar into containerd, docker, podman or runc (containerd: a drop-in on 2.1+, else a backed-up edit; --dry-run prints it), initialise the state, run doctor", runSetup},
		"config": {"print the snippet that wires northstar into containerd (and its CRI base-spec), hooks-d (podman, CRI-O), runc or crio (a runtime_path drop-in)", runConfig},
		"agent":  {"the agent: serve the unsealed secret to the hook from memory, and with [api] enable each container its own API socket ([agent] socket; foreground)", runAgent},
		"attest": {"attest --nonce HEX: this host's TPM evidence (EK certificate, AK, PCR quote, certified root key) as JSON; attest verify checks it offline", runAttest},
		"audit":  {"audit verify|reset: check the agent's audit log (exit 1 names the first bad line), or start a new one", runAudit},
	}
}

// Run is northstarctl's main: args without the program name. Errors a
// command fixes carry their remedy (package remedy).
func Run(ctx context.Context, env *Env, args []string) error {
	return remedy.Explain(run(ctx, env, args))
}

func run(ctx context.Context, env *Env, args []string) error {
	// Global flags may come before the subcommand, as with ctr, podman and
	// kubectl: `northstarctl --config X init`. --config is the only one;
	// it is handed to the subcommand, which parses it like its own.
	var global []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch a := args[0]; {
		case a == "-h" || a == "--help" || a == "-help":
			usage(env.Stdout)
			return nil
		case a == "--config" || a == "-config":
			if len(args) < 2 {
				usage(env.Stderr)
				return fmt.Errorf("%w: flag needs an argument: %s", ErrUsage, a)
			}
			global, args = append(global, a, args[1]), args[2:]
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			global, args = append(global, a), args[1:]
		default:
			usage(env.Stderr)
			return fmt.Errorf("%w: unknown global flag %q (the only one is --config)", ErrUsage, a)
		}
	}
	if len(args) == 0 {
		usage(env.Stderr)
		return fmt.Errorf("%w: missing subcommand", ErrUsage)
	}
	if args[0] == "help" {
		usage(env.Stdout)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(env.Stderr)
		return fmt.Errorf("%w: unknown subcommand %q", ErrUsage, args[0])
	}
	return cmd.run(ctx, env, append(global, args[1:]...))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: northstarctl [--config PATH] <command> [flags]   (flags may also follow the command)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nEvery command takes --config (default $NORTHSTAR_CONFIG, else "+config.DefaultPath+",\nor $XDG_CONFIG_HOME/northstar/config.toml when rootless) and --help.")
	fmt.Fprintln(w, "Exit status: 0 ok, 1 failure, 2 usage.")
}

// flags returns a flag set with the common --config flag. Parse it with
// parse, which maps -h to a nil error after printing help.
func flags(env *Env, name, synopsis string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("northstarctl "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	cfg := fs.String("config", "", "config file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: northstarctl %s %s\n\n%s\n\nFlags:\n", name, synopsis, commands[name].summary)
		fs.PrintDefaults()
	}
	return fs, cfg
}

var errHelp = errors.New("help shown")

// parse parses a subcommand's flags, which may come anywhere among its
// arguments (`config --config X hooks-d` and `config hooks-d --config X`
// alike), and returns at most maxArgs positional arguments; after "--"
// everything is positional.
func parse(fs *flag.FlagSet, env *Env, args []string, maxArgs int) ([]string, error) {
	fs.SetOutput(env.Stderr)
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return nil, errHelp
		}
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	positional = append(positional, rest...)
	if len(positional) > maxArgs {
		return nil, fmt.Errorf("%w: unexpected argument %q", ErrUsage, positional[maxArgs])
	}
	return positional, nil
}

func openStore(path string) (*config.Config, *store.Store, error) {
	cfg, err := config.Load(config.Discover(path))
	if err != nil {
		return nil, nil, err
	}
	st, err := configured.Store(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, st, nil
}

func runInit(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "init", "[--config PATH]")
	if _, err := parse(fs, env, args, 0); err != nil {
		return helpOK(err)
	}
	cfg, st, err := openStore(*cfgPath)
	if err != nil {
		return err
	}
	rec, created, err := st.Init(ctx, "")
	if err != nil {
		return fmt.Errorf("init: %w", noTPM(cfg, err))
	}
	if created {
		fmt.Fprintf(env.Stdout, "initialized %s: generation %d, sealer %s\n", st.Dir(), rec.Generation, rec.Sealer)
	} else {
		fmt.Fprintf(env.Stdout, "already initialized %s: generation %d, sealer %s\n", st.Dir(), rec.Generation, rec.Sealer)
	}
	return nil
}

func runRotate(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "rotate", "[--config PATH] [--new-srk] [--revoke ID...]")
	newSRK := fs.Bool("new-srk", false, "seal under the TPM's storage root key as it is now, even if it is not the one the current secret was sealed under (a TPM cleared or replaced on purpose)")
	var revoke []string
	fs.Func("revoke", "cut off the running container with this id (repeat, or list them after the flags): it loses its secret, its API socket and its tokens, while every other container gets the new secret; the id cannot start again until 'northstarctl revoke --lift ID'", func(id string) error {
		revoke = append(revoke, id)
		return nil
	})
	ids, err := parse(fs, env, args, 1<<10)
	if err != nil {
		return helpOK(err)
	}
	if len(ids) > 0 && len(revoke) == 0 {
		return fmt.Errorf("%w: unexpected argument %q (containers to cut off follow --revoke)", ErrUsage, ids[0])
	}
	revoke = append(revoke, ids...)
	for _, id := range revoke {
		if err := (control.Registration{ID: id, Identity: "x", Pid: 2, Start: 1}).Check(); err != nil {
			return fmt.Errorf("%w: --revoke %q: not a container id", ErrUsage, id)
		}
	}
	if *newSRK && len(revoke) > 0 {
		return fmt.Errorf("%w: --new-srk and --revoke are separate rotations", ErrUsage)
	}
	_, st, err := openStore(*cfgPath)
	if err != nil {
		return err
	}
	var rec *store.Record
	if *newSRK {
		rec, err = st.Reprovision(ctx)
	} else {
		rec, err = st.Rotate(ctx, revoke...)
	}
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	fmt.Fprintf(env.Stdout, "rotated %s: generation %d\n", st.Dir(), rec.Generation)
	if len(revoke) > 0 {
		fmt.Fprintf(env.Stdout, "revoked: %s (the agent cuts them off as it delivers generation %d)\n", strings.Join(revoke, ", "), rec.Generation)
	}
	return nil
}

func helpOK(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func runAgent(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "agent", "[--config PATH]")
	// Internal: the agent runs itself with this flag to unseal in a child
	// process, whose heap (where go-tpm leaves plaintext) dies with it.
	unsealFD := fs.Int("unseal-to-fd", 0, "internal: unseal and send the secret over this socket fd, then exit")
	keyName := fs.String("unseal-key", "", "internal: with --unseal-to-fd, write this key of the agent's to the fd instead")
	keySize := fs.Int("key-size", 0, "internal: the size of --unseal-key")
	lifecycleID := fs.String(strings.TrimPrefix(rotate.Flag, "--"), "", "internal: rotate the secret unless it belongs to this runtime lifecycle id, say what was done, then exit")
	if _, err := parse(fs, env, args, 0); err != nil {
		return helpOK(err)
	}
	cfg, st, err := openStore(*cfgPath)
	if err != nil {
		return err
	}
	if *unsealFD != 0 && *keyName != "" {
		return agent.KeyTo(ctx, st, *keyName, *keySize, os.NewFile(uintptr(*unsealFD), "key"))
	}
	if *unsealFD != 0 {
		return agent.UnsealTo(ctx, st, os.NewFile(uintptr(*unsealFD), "unseal"))
	}
	if *lifecycleID != "" {
		return agent.RotateFor(ctx, st, *lifecycleID, env.Stdout)
	}
	if os.Getenv(agent.ChildEnv) != "" {
		return fmt.Errorf("agent: %s is set: this process is an unseal child and serves nothing", agent.ChildEnv)
	}
	if cfg.Agent.Socket == "" {
		return fmt.Errorf("agent: [agent] socket is not set in %s", cfg.Path)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	// This binary again, as the unseal child for the secret and the keys.
	child := []string{exe, "agent", "--unseal-to-fd", "3", "--config", cfg.Path}
	unseal := agent.InChild(child)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	opts := agent.Options{Socket: cfg.Agent.Socket, Store: st, Unseal: unseal, Log: env.Stdout,
		Live: cfg.Rotation.Live, Grace: cfg.Grace(),
		Starts: func(reg *registry.Containers, secret control.Source) (control.Starter, error) {
			return served.New(reg, secret, cfg, env.Stdout)
		},
	}
	if env.ShimStarts != nil {
		opts.ShimStarts = func(reg *registry.Containers) (control.ShimStarter, error) {
			return env.ShimStarts(reg, cfg, env.Stdout)
		}
	}
	if cfg.API.Enable {
		opts.API = &registry.APIOptions{LoadKey: agent.KeyInChild(child), TokenTTL: cfg.TokenTTL(),
			AuditPath:   filepath.Join(cfg.StateDir, audit.FileName),
			AuditLimits: auditLimits(cfg),
			UsedTokens:  filepath.Join(cfg.StateDir, replay.FileName),
			Replay:      replay.Limits{PerAudience: cfg.API.MaxUsedTokens, PerSender: cfg.API.MaxUsedTokensPerSender},
			Limits: api.Limits{Conns: cfg.API.MaxConnections, Rate: cfg.API.Rate, Burst: cfg.API.Burst,
				Timeout: cfg.RequestTimeout()}}
		if td := cfg.SPIFFE.TrustDomain; td != "" {
			id, err := spiffeid.TrustDomainFromString(td) // validated by config
			if err != nil {
				return fmt.Errorf("agent: [spiffe] trust_domain: %w", err)
			}
			opts.API.SPIFFE = &registry.SPIFFE{TrustDomain: id, X509TTL: cfg.X509SVIDTTL(), JWTTTL: cfg.JWTSVIDTTL()}
			if cfg.SPIFFE.Issuer == config.IssuerSPIRE {
				opts.API.SPIFFE.SPIREAdminSocket = cfg.SPIRE.AdminSocket
			}
			if cfg.SPIFFE.Root == config.SPIFFERootTPM {
				if opts.API.SPIFFE.Root, err = tpmRoot(ctx, cfg, env.Stdout); err != nil {
					return fmt.Errorf("agent: %w", err)
				}
			}
			if err := federate(ctx, cfg, opts.API.SPIFFE, env.Stdout); err != nil {
				return fmt.Errorf("agent: %w", err)
			}
		}
	}
	if cfg.NRI.Enable {
		plugin, err := nriOptions(cfg, rotate.InChild([]string{exe, "agent", "--config", cfg.Path}, agent.ChildEnv+"=1"), env.Stdout)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		// Started once the agent listens (agent.Run calls Ready in its
		// own goroutine, so started needs no lock); stopped with it.
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		started := false
		// The agent builds the containers' mounts itself wherever it
		// keeps a registry: no hook on their start path.
		opts.OnRegistry = func(r *registry.Containers) { plugin.Deliver = r }
		opts.Ready = func() {
			started = true
			go func() { defer close(done); nri.Run(pctx, plugin) }()
		}
		defer func() {
			cancel()
			if started {
				<-done
			}
		}()
	}
	if cfg.Measure.Enable {
		// Every delivery of the secret is logged, and extended into the
		// TPM in the background (docs/attestation.md).
		mlog, err := openMeasure(ctx, cfg, agent.KeyInChild(child), env.Stdout)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer mlog.Close()
		onRegistry := opts.OnRegistry
		opts.OnRegistry = func(r *registry.Containers) {
			r.Measure(mlog)
			if onRegistry != nil {
				onRegistry(r)
			}
		}
	}
	if err := agent.Run(ctx, opts); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// nriOptions are the agent's NRI plugin's options ([nri] enable): the
// hook found next to northstarctl (or on PATH), and rotation on a runtime
// restart, in a child, unless [rotation] on = "manual".
func nriOptions(cfg *config.Config, rotateFor rotate.Func, log io.Writer) (nri.Options, error) {
	hookPath, err := entry.Find()
	if err != nil {
		return nri.Options{}, fmt.Errorf("[nri] enable: %w", err)
	}
	opts := nri.Options{Socket: cfg.NRI.Socket, Hook: entry.New(hookPath, cfg.Path), APIEnabled: cfg.API.Enable,
		APIEnv: entry.APIEnv(cfg.SPIFFE.TrustDomain), Log: log, Live: cfg.Rotation.Live, SecretMode: cfg.SecretMode(),
		IdentityAnyNamespace: cfg.API.IdentityAnyNamespace}
	if cfg.Rotation.On == config.RotateManual {
		return opts, nil
	}
	opts.Rotate = func(ctx context.Context, runtimePid int) error {
		id, err := lifecycle.ID(runtimePid)
		if err != nil {
			return fmt.Errorf("lifecycle id: %w", err)
		}
		r, err := rotateFor(ctx, id)
		if err != nil {
			return err
		}
		switch r.Change {
		case store.Rotated:
			fmt.Fprintf(log, "nri: runtime restarted (pid %d), new lifecycle secret generation %d\n", runtimePid, r.Generation)
		case store.Adopted:
			fmt.Fprintf(log, "nri: secret generation %d adopted for the runtime (pid %d)\n", r.Generation, runtimePid)
		}
		return nil
	}
	return opts, nil
}

// auditLimits are the [audit] keys as the log takes them.
func auditLimits(cfg *config.Config) audit.Limits {
	return audit.Limits{MaxBytes: cfg.Audit.MaxBytes, Keep: cfg.Audit.Keep}
}

func runAudit(ctx context.Context, env *Env, args []string) error {
	fs, cfgPath := flags(env, "audit", "verify|reset [--config PATH]")
	pos, err := parse(fs, env, args, 1)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) != 1 || pos[0] != "verify" && pos[0] != "reset" {
		return fmt.Errorf("%w: audit needs a subcommand: verify or reset", ErrUsage)
	}
	cfg, st, err := openStore(*cfgPath)
	if err != nil {
		return err
	}
	if pos[0] == "reset" {
		return auditReset(ctx, env, st)
	}
	key, err := st.Key(ctx, registry.AuditKeyName, 32)
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	defer clear(key)
	// The head recorded at the last rotation, if any: the one thing that
	// tells a log cut off at its end from a shorter one. A record that
	// cannot be read is no reason to skip that check silently.
	var want *audit.Head
	var gen uint64
	rec, err := st.Current()
	switch {
	case err == nil:
		want, gen = rec.AuditHead, rec.Generation
	case !errors.Is(err, store.ErrNotInitialized):
		return fmt.Errorf("audit verify: cannot read the recorded head: %w", err)
	}
	path := filepath.Join(cfg.StateDir, audit.FileName)
	res, err := audit.VerifyFiles(path, key, want)
	switch {
	case errors.Is(err, iofs.ErrNotExist) && want != nil:
		return fmt.Errorf("audit verify: %s is gone, but the head recorded at the rotation to generation %d is line %d: the log was deleted or moved ('northstarctl audit reset' starts a new one)", path, gen, want.Lines)
	case errors.Is(err, audit.ErrTruncated):
		return fmt.Errorf("audit verify: %s ends at line %d, but the head recorded at the rotation to generation %d is line %d: lines were cut off its end", path, res.Head.Lines, gen, want.Lines)
	case errors.Is(err, audit.ErrHeadMismatch):
		return fmt.Errorf("audit verify: %s: %w (head recorded at the rotation to generation %d)", filepath.Dir(path), err, gen)
	case err != nil:
		var bad *audit.BadLineError
		if errors.As(err, &bad) || errors.Is(err, audit.ErrMissingFile) {
			// They name the file, not its directory.
			return fmt.Errorf("audit verify: %s: %w", filepath.Dir(path), err)
		}
		return fmt.Errorf("audit verify: %w", err)
	}
	fmt.Fprintf(env.Stdout, "%s: %d lines, chain and MACs intact (last %s)\n", path, res.Head.Lines, res.Head.Hash)
	if res.First > 1 {
		fmt.Fprintf(env.Stdout, "lines before %d were pruned by rotation ([audit] keep); %s hold the rest\n", res.First, strings.Join(res.Files, ", "))
	}
	if want != nil {
		fmt.Fprintf(env.Stdout, "reaches the head recorded at the rotation to generation %d (line %d); lines written since can be cut undetected until the next rotation\n", gen, want.Lines)
	} else {
		fmt.Fprintln(env.Stdout, "no recorded head checked (none recorded yet; the next rotation records one): a cut tail is not detected")
	}
	return nil
}

// auditReset starts a new audit log after one that no longer verifies
// (the agent refuses to extend it): the files move aside as evidence and
// the recorded head goes. With the agent running it refuses (store.ResetAudit):
// the agent would go on writing into the moved file.
func auditReset(ctx context.Context, env *Env, st *store.Store) error {
	moved, err := st.ResetAudit(ctx)
	if err != nil {
		return fmt.Errorf("audit reset: %w", err)
	}
	if moved != "" {
		fmt.Fprintf(env.Stdout, "moved the audit log to %s (keep it as evidence); ", moved)
	}
	fmt.Fprintln(env.Stdout, "no recorded head: the next agent starts a new log")
	return nil
}

// writeJSON prints v as indented JSON: status --json and the snippets.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
