// SPDX-License-Identifier: Apache-2.0

// Package config loads northstar's one settings file (TOML). The key names are
// part of the contract in DESIGN.md; unknown keys are rejected so a typo does
// not silently fall back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/northstar-oci/northstar/config/peek"
	"github.com/northstar-oci/northstar/internal/capped"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/secretfs"
)

// EnvConfig names the environment variable that overrides the config path.
const EnvConfig = peek.EnvConfig

// DefaultPath is the rootful config path.
const DefaultPath = peek.DefaultPath

// maxConfigSize caps the config file; it is a few hundred bytes in practice.
const maxConfigSize = 64 << 10

// Sealer kinds: the values of the "sealer" key.
const (
	SealerTPM  = seal.KindTPM
	SealerHost = seal.KindHost
)

// Rotation policies.
const (
	RotateOnRuntimeRestart = "runtime-restart"
	RotateManual           = "manual"
)

// Config is the parsed settings file.
type Config struct {
	StateDir string   `toml:"state_dir"`
	Sealer   string   `toml:"sealer"`
	TPM      TPM      `toml:"tpm"`
	Secret   Secret   `toml:"secret"`
	Rotation Rotation `toml:"rotation"`
	Agent    Agent    `toml:"agent"`
	API      API      `toml:"api"`
	Audit    Audit    `toml:"audit"`
	Shim     Shim     `toml:"shim"`
	Runtime  Runtime  `toml:"runtime"`
	NRI      NRI      `toml:"nri"`
	SPIFFE   SPIFFE   `toml:"spiffe"`
	SPIRE    SPIRE    `toml:"spire"`

	// Federation is trust between attested northstar hosts (federation.go).
	Federation Federation `toml:"federation"`
	// Measure is the measured-container log (measure.go).
	Measure Measure `toml:"measure"`

	// Path is where the config was read from ("" for defaults).
	Path string `toml:"-"`
}

// TPM selects the TPM and the PCRs the secret is bound to.
type TPM struct {
	Path string `toml:"path"`
	PCRs []int  `toml:"pcrs"`
	// Timeout bounds one conversation with the TPM (a Go duration, "10s"):
	// a TPM that accepts and never answers fails the start instead of
	// holding the TPM lock, and every other start, until the runtime's
	// hook timeout.
	Timeout string `toml:"timeout"`
	// Lock is the file every process that talks to the TPM locks around
	// its conversation, so that they take turns ("" = TPMLockPath's
	// default). It lives where the TPM does, not in the state directory:
	// an immutable OS image's read-only state directory must not stop
	// container starts.
	Lock string `toml:"lock"`
}

// TPMLockPath returns the TPM lock file: [tpm] lock, else beside a socket
// TPM ("unix:/run/swtpm/sock" locks "/run/swtpm/sock.lock": whoever can
// reach the socket can reach its directory), else in the runtime
// directory: /run/northstar-tpm.lock, or $XDG_RUNTIME_DIR/northstar-tpm.lock
// for a rootless process with one (the hook runs with the environment its
// runtime gives it, where XDG_RUNTIME_DIR is usually unset).
func (c *Config) TPMLockPath() string {
	switch p := c.TPM.Path; {
	case c.TPM.Lock != "":
		return c.TPM.Lock
	case strings.HasPrefix(p, "unix:"):
		return strings.TrimPrefix(p, "unix:") + ".lock"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); Rootless() && filepath.IsAbs(dir) {
		return filepath.Join(dir, "northstar-tpm.lock")
	}
	return "/run/northstar-tpm.lock"
}

// TPM timeout bounds: long enough for a slow hardware TPM creating an SRK,
// short enough to fail before a runtime's hook timeout (30 s, entry.Timeout).
const (
	minTPMTimeout = time.Second
	maxTPMTimeout = 5 * time.Minute
)

// TPMTimeout returns the validated [tpm] timeout.
func (c *Config) TPMTimeout() time.Duration {
	d, _ := time.ParseDuration(c.TPM.Timeout) // validated by Load
	return d
}

// Secret describes the in-container file.
type Secret struct {
	Dir  string `toml:"dir"`
	Mode string `toml:"mode"`
}

// Rotation says when a new lifecycle secret is made, and how it reaches
// the containers that already run.
type Rotation struct {
	On string `toml:"on"`
	// Live: with the agent running ([agent] socket), the agent delivers
	// every container's secret and rewrites it in the running container at
	// every rotation (DESIGN.md §12). Default true.
	Live bool `toml:"live"`
	// Grace is how long the secret a container had stays beside the new
	// one as secret.previous ("0s": not at all), at most "24h".
	Grace string `toml:"grace"`
}

// Grace returns the validated [rotation] grace.
func (c *Config) Grace() time.Duration {
	d, _ := time.ParseDuration(c.Rotation.Grace) // validated by Load
	return d
}

// Agent configures the opt-in per-lifecycle agent (northstarctl agent) that
// keeps the unsealed secret off the TPM for each container start. Off by
// default: per-start unsealing keeps the plaintext lifetime to milliseconds
// and checks the PCR policy at every start.
type Agent struct {
	// Socket is the agent's pathname unix socket; "" disables the agent.
	Socket string `toml:"socket"`
}

// API configures the agent's per-container API (DESIGN.md §9) and what
// one container may take of the agent through its socket (§11). Every
// bound is per container: one container's load never spends what the
// others need. The defaults pass the 8 containers × 100 token pairs of
// DESIGN.md §7 (800 verifications at once on one socket).
type API struct {
	// Enable gives every container /run/northstar/api/api.sock (needs the
	// agent: [agent] socket).
	Enable bool `toml:"enable"`
	// TokenTTL is the default token lifetime, at most "1h".
	TokenTTL string `toml:"token_ttl"`
	// MaxConnections caps a socket's open connections (1-1024); more wait
	// until one closes.
	MaxConnections int `toml:"max_connections"`
	// Rate and Burst are a socket's requests per second and the burst
	// above it (a token bucket); beyond them the agent answers 429 with
	// Retry-After.
	Rate  float64 `toml:"rate"`
	Burst int     `toml:"burst"`
	// RequestTimeout bounds reading one request and writing its answer.
	RequestTimeout string `toml:"request_timeout"`
	// MaxUsedTokens is how many unexpired verified tokens one audience
	// (the verifying container's identity) remembers; PerSender how many
	// of them one sender's may take. A verification beyond them is 503.
	MaxUsedTokens          int `toml:"max_used_tokens"`
	MaxUsedTokensPerSender int `toml:"max_used_tokens_per_sender"`
	// IdentityAnyNamespace lets an explicit io.northstar.identity on a
	// Kubernetes container name an identity outside its pod's namespace
	// (default false: it must be "<namespace>/...").
	IdentityAnyNamespace bool `toml:"identity_any_namespace"`
}

// Defaults and bounds of [api]. The defaults are the agent's own
// (packages api and replay); config_test holds them equal.
const (
	DefaultAPIMaxConnections = 16
	DefaultAPIRate           = 500
	DefaultAPIBurst          = 1000
	DefaultAPIRequestTimeout = "10s"
	DefaultMaxUsedTokens     = 1 << 16
	DefaultMaxUsedPerSender  = 1 << 14
	maxAPIConnections        = 1024
	maxUsedTokens            = 1 << 24
)

// RequestTimeout returns the validated [api] request_timeout.
func (c *Config) RequestTimeout() time.Duration {
	d, _ := time.ParseDuration(c.API.RequestTimeout) // validated by Load
	return d
}

// maxTokenTTL is the contract's bound on token lifetimes.
const maxTokenTTL = time.Hour

// TokenTTL returns the validated [api] token_ttl.
func (c *Config) TokenTTL() time.Duration {
	d, _ := time.ParseDuration(c.API.TokenTTL) // validated by Load
	return d
}

// Audit bounds the agent's audit log on disk (<state_dir>/audit.log,
// DESIGN.md §10). When a line would take the file past MaxBytes, it
// becomes audit.log.1 (audit.log.1 becomes .2, and so on) and a new file
// continues the chain; only Keep old files stay, older lines are pruned
// by design. So the log takes at most about (Keep+1) × MaxBytes.
type Audit struct {
	// MaxBytes is the size at which the file rotates, from 64 KiB (a
	// floor well above one line, whose fields are capped at 512 bytes each,
	// so every file holds many) to 1 GiB.
	MaxBytes int64 `toml:"max_bytes"`
	// Keep is how many rotated files stay, from 1 to 1000.
	Keep int `toml:"keep"`
}

// Bounds of [audit].
const (
	minAuditMaxBytes = 64 << 10
	maxAuditMaxBytes = 1 << 30
	maxAuditKeep     = 1000
)

// Defaults of [audit]: 8 MiB holds some 30 000 events. (Package audit has
// the same defaults for a zero Limits; config_test holds them equal.)
const (
	DefaultAuditMaxBytes = 8 << 20
	DefaultAuditKeep     = 4
)

// SPIFFE configures the SPIFFE Workload API the agent serves beside each
// container's API socket (DESIGN.md §14): off until a trust domain is set.
type SPIFFE struct {
	// TrustDomain names the trust domain of every container's SPIFFE ID,
	// spiffe://<trust_domain>/<identity>: 1-255 characters of
	// [a-z0-9._-]; "" (the default) turns the Workload API off.
	TrustDomain string `toml:"trust_domain"`
	// X509SVIDTTL is the lifetime of an X.509-SVID, from "5m" to "24h";
	// open streams get a new one at half of it.
	X509SVIDTTL string `toml:"x509_svid_ttl"`
	// JWTSVIDTTL is the lifetime of a JWT-SVID, from "30s" to "1h".
	JWTSVIDTTL string `toml:"jwt_svid_ttl"`
	// Issuer is where the SVIDs come from: IssuerLocal (the default), the
	// agent's per-host CA of trust_domain, or IssuerSPIRE, the host's
	// SPIRE agent ([spire]), whose server's trust domain trust_domain
	// then names (DESIGN.md §16). The lifetimes above are the local CA's;
	// SPIRE's entries set their own.
	Issuer string `toml:"issuer"`
	// Root is where the X.509 CA's root key lives: "seed" (the default),
	// derived from a seed sealed in the state directory; or "tpm", a key
	// made in the TPM that never leaves it (sealer = "tpm"), certified by
	// the host's attestation key, which signs an intermediate every
	// CATTL (docs/attestation.md).
	Root string `toml:"root"`
	// CATTL is the lifetime of the intermediate under a "tpm" root, from
	// twice x509_svid_ttl to "720h"; a new one is made at half of it.
	CATTL string `toml:"ca_ttl"`
}

// [spiffe] root values.
const (
	SPIFFERootSeed = "seed"
	SPIFFERootTPM  = "tpm"
)

const maxCATTL = 720 * time.Hour

// CATTL returns the validated [spiffe] ca_ttl.
func (c *Config) CATTL() time.Duration {
	d, _ := time.ParseDuration(c.SPIFFE.CATTL) // validated by Load
	return d
}

// validateSPIFFERoot checks [spiffe] root and ca_ttl.
func (c *Config) validateSPIFFERoot() error {
	switch c.SPIFFE.Root {
	case SPIFFERootSeed:
	case SPIFFERootTPM:
		if c.Sealer != "tpm" {
			return fmt.Errorf("[spiffe] root = %q needs the TPM: set sealer = \"tpm\" (or root = %q)", SPIFFERootTPM, SPIFFERootSeed)
		}
	default:
		return fmt.Errorf("[spiffe] root %q: want %q or %q", c.SPIFFE.Root, SPIFFERootSeed, SPIFFERootTPM)
	}
	x509TTL, _ := time.ParseDuration(c.SPIFFE.X509SVIDTTL)
	if d, err := time.ParseDuration(c.SPIFFE.CATTL); err != nil || d < 2*x509TTL || d > maxCATTL {
		return fmt.Errorf("[spiffe] ca_ttl %q: want a duration from twice x509_svid_ttl (%s) to %s, like \"24h\"", c.SPIFFE.CATTL, 2*x509TTL, maxCATTL)
	}
	return nil
}

// Issuers: the values of [spiffe] issuer.
const (
	IssuerLocal = "local"
	IssuerSPIRE = "spire"
)

// SPIRE is how the agent reaches the host's SPIRE agent, with [spiffe]
// issuer = "spire": as a delegate, on its admin socket (docs/spiffe.md).
type SPIRE struct {
	// AdminSocket is the SPIRE agent's admin_socket_path.
	AdminSocket string `toml:"admin_socket"`
}

// DefaultSPIREAdminSocket is [spire] admin_socket's default.
const DefaultSPIREAdminSocket = "/run/spire/agent/admin.sock"

// Bounds of the [spiffe] lifetimes. SPIRE's defaults are 1 h and 5 min.
const (
	minX509SVIDTTL = 5 * time.Minute
	maxX509SVIDTTL = 24 * time.Hour
	minJWTSVIDTTL  = 30 * time.Second
	maxJWTSVIDTTL  = time.Hour
)

// X509SVIDTTL returns the validated [spiffe] x509_svid_ttl.
func (c *Config) X509SVIDTTL() time.Duration {
	d, _ := time.ParseDuration(c.SPIFFE.X509SVIDTTL) // validated by Load
	return d
}

// JWTSVIDTTL returns the validated [spiffe] jwt_svid_ttl.
func (c *Config) JWTSVIDTTL() time.Duration {
	d, _ := time.ParseDuration(c.SPIFFE.JWTSVIDTTL) // validated by Load
	return d
}

// ValidTrustDomain reports whether s is a SPIFFE trust domain name: 1-255
// characters of [a-z0-9._-] (the SPIFFE ID spec, §2.1). A loop of our own,
// not go-spiffe's parser: the hook reads the config and must not link the
// SPIFFE libraries; TestValidTrustDomainMatchesGoSPIFFE keeps the two equal.
func ValidTrustDomain(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Shim configures containerd-shim-northstar-v2.
type Shim struct {
	// Delegate is the runc-compatible shim the wrapper execs after it
	// prepared a container: a name, found next to containerd or on PATH
	// as containerd finds shims, or an absolute path.
	Delegate string `toml:"delegate"`
}

// Runtime configures northstar-runtime, the runc-compatible wrapper for
// Docker, CRI-O and `podman --runtime`.
type Runtime struct {
	// Delegate is the runc-compatible runtime the wrapper execs with the
	// engine's arguments: a name found on PATH (runc, crun) or an
	// absolute path.
	Delegate string `toml:"delegate"`
}

// DefaultRuntimeDelegate is the runtime northstar-runtime runs.
const DefaultRuntimeDelegate = "runc"

// NRI configures the agent's NRI plugin (package nri): the way into every
// Kubernetes container on containerd 2.x (and CRI-O 1.30+) without a
// RuntimeClass. The agent runs it; it needs [agent] socket.
type NRI struct {
	// Enable connects the agent to the runtime's NRI socket, and keeps
	// reconnecting to it (a runtime restart closes the connection).
	Enable bool `toml:"enable"`
	// Socket is the runtime's NRI socket (containerd's
	// [plugins."io.containerd.nri.v1.nri"] socket_path).
	Socket string `toml:"socket"`
}

// DefaultNRISocket is where containerd and CRI-O listen for NRI plugins.
const DefaultNRISocket = "/var/run/nri/nri.sock"

// DefaultShimDelegate is the host's own runc shim.
const DefaultShimDelegate = "containerd-shim-runc-v2"

// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
const maxSocketPath = 107

// Default returns the settings used when a key is absent.
func Default() *Config {
	return &Config{
		StateDir: "/var/lib/northstar",
		Sealer:   SealerTPM,
		TPM:      TPM{Path: "/dev/tpmrm0", PCRs: []int{}, Timeout: "10s"},
		Secret:   Secret{Dir: secretfs.Dir, Mode: fmt.Sprintf("%04o", secretfs.DefaultMode)},
		Rotation: Rotation{On: RotateOnRuntimeRestart, Live: true, Grace: "5m"},
		API: API{TokenTTL: "60s", MaxConnections: DefaultAPIMaxConnections, Rate: DefaultAPIRate, Burst: DefaultAPIBurst,
			RequestTimeout: DefaultAPIRequestTimeout, MaxUsedTokens: DefaultMaxUsedTokens, MaxUsedTokensPerSender: DefaultMaxUsedPerSender},
		Audit:   Audit{MaxBytes: DefaultAuditMaxBytes, Keep: DefaultAuditKeep},
		Shim:    Shim{Delegate: DefaultShimDelegate},
		Runtime: Runtime{Delegate: DefaultRuntimeDelegate},
		NRI:     NRI{Socket: DefaultNRISocket},
		SPIFFE:  SPIFFE{X509SVIDTTL: "1h", JWTSVIDTTL: "5m", Issuer: IssuerLocal, Root: SPIFFERootSeed, CATTL: "24h"},
		SPIRE:   SPIRE{AdminSocket: DefaultSPIREAdminSocket},
	}
}

// Load reads and validates the config at path.
func Load(path string) (*Config, error) {
	data, err := capped.ReadFile(path, maxConfigSize, "config "+path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist; create it (see 'northstarctl config --help') or pass --config", path)
		}
		if errors.Is(err, capped.ErrTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("open config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// AgentSocket reads [agent] socket from the config file at path and
// nothing else ("": no agent): what northstar-agent-hook needs to reach
// the agent, which decides the start with the config it loaded, and
// refuses a file that changed since (the hook then loads it whole).
// Decoding one key costs a fraction of Load, on every start.
func AgentSocket(path string) (string, error) {
	data, err := capped.ReadFile(path, maxConfigSize, "config "+path)
	if err != nil {
		return "", err
	}
	var c struct {
		Agent struct {
			Socket string `toml:"socket"`
		} `toml:"agent"`
	}
	if err := toml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("config %s: %w", path, err)
	}
	return c.Agent.Socket, nil
}

// Parse decodes TOML settings over the defaults and validates them.
func Parse(data []byte) (*Config, error) {
	c := Default()
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return nil, fmt.Errorf("unknown key(s): %s", strings.TrimSpace(sm.String()))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("line %d column %d: %s", row, col, de.Error())
		}
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every value, so the hook fails at config time and not
// halfway through a container start.
func (c *Config) Validate() error {
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state_dir %q must be an absolute path", c.StateDir)
	}
	switch c.Sealer {
	case SealerTPM:
		if c.TPM.Path == "" {
			return errors.New("[tpm] path is empty")
		}
	case SealerHost:
	default:
		return fmt.Errorf("sealer %q: want %q or %q", c.Sealer, SealerTPM, SealerHost)
	}
	if l := c.TPM.Lock; l != "" && (!filepath.IsAbs(l) || filepath.Clean(l) != l) {
		return fmt.Errorf("[tpm] lock %q must be a clean absolute path", l)
	}
	if d, err := time.ParseDuration(c.TPM.Timeout); err != nil || d < minTPMTimeout || d > maxTPMTimeout {
		return fmt.Errorf("[tpm] timeout %q: want a duration from %s to %s, like \"10s\"", c.TPM.Timeout, minTPMTimeout, maxTPMTimeout)
	}
	if err := seal.CheckPCRs(c.TPM.PCRs); err != nil {
		return fmt.Errorf("[tpm] pcrs: %w", err)
	}
	if c.Secret.Dir != secretfs.Dir {
		// The key is part of the contract (DESIGN.md §3) and documents
		// where the secret appears; its one value is secretfs.Dir.
		return fmt.Errorf("[secret] dir %q: only %s is supported", c.Secret.Dir, secretfs.Dir)
	}
	if _, err := secretfs.ParseMode(c.Secret.Mode); err != nil {
		return fmt.Errorf("[secret] mode: %w", err)
	}
	switch c.Rotation.On {
	case RotateOnRuntimeRestart, RotateManual:
	default:
		return fmt.Errorf("[rotation] on %q: want %q or %q", c.Rotation.On, RotateOnRuntimeRestart, RotateManual)
	}
	if d, err := time.ParseDuration(c.Rotation.Grace); err != nil || d < 0 || d > 24*time.Hour {
		return fmt.Errorf("[rotation] grace %q: want a duration from 0s to 24h, like \"5m\"", c.Rotation.Grace)
	}
	if d, err := time.ParseDuration(c.API.TokenTTL); err != nil || d < time.Second || d > maxTokenTTL {
		return fmt.Errorf("[api] token_ttl %q: want a duration from 1s to %s, like \"60s\"", c.API.TokenTTL, maxTokenTTL)
	}
	if n := c.API.MaxConnections; n < 1 || n > maxAPIConnections {
		return fmt.Errorf("[api] max_connections %d: want 1 to %d", n, maxAPIConnections)
	}
	if r := c.API.Rate; !(r >= 1 && r <= 1e6) {
		return fmt.Errorf("[api] rate %g: want 1 to 1000000 requests a second", r)
	}
	if n := c.API.Burst; n < 1 || n > 1e6 {
		return fmt.Errorf("[api] burst %d: want 1 to 1000000 requests", n)
	}
	if d, err := time.ParseDuration(c.API.RequestTimeout); err != nil || d < 100*time.Millisecond || d > 5*time.Minute {
		return fmt.Errorf("[api] request_timeout %q: want a duration from 100ms to 5m, like \"10s\"", c.API.RequestTimeout)
	}
	if n := c.API.MaxUsedTokens; n < 1 || n > maxUsedTokens {
		return fmt.Errorf("[api] max_used_tokens %d: want 1 to %d", n, maxUsedTokens)
	}
	if n := c.API.MaxUsedTokensPerSender; n < 1 || n > c.API.MaxUsedTokens {
		return fmt.Errorf("[api] max_used_tokens_per_sender %d: want 1 to max_used_tokens (%d)", n, c.API.MaxUsedTokens)
	}
	if n := c.Audit.MaxBytes; n < minAuditMaxBytes || n > maxAuditMaxBytes {
		return fmt.Errorf("[audit] max_bytes %d: want %d (64 KiB) to %d (1 GiB)", n, minAuditMaxBytes, maxAuditMaxBytes)
	}
	if n := c.Audit.Keep; n < 1 || n > maxAuditKeep {
		return fmt.Errorf("[audit] keep %d: want 1 to %d rotated files", n, maxAuditKeep)
	}
	if td := c.SPIFFE.TrustDomain; td != "" {
		if !ValidTrustDomain(td) {
			return fmt.Errorf("[spiffe] trust_domain %q: want 1-255 characters of [a-z0-9._-], like \"example.org\" (no spiffe:// and no path)", td)
		}
		if !c.API.Enable {
			return errors.New("[spiffe] trust_domain needs the per-container API: set [api] enable = true")
		}
	}
	if d, err := time.ParseDuration(c.SPIFFE.X509SVIDTTL); err != nil || d < minX509SVIDTTL || d > maxX509SVIDTTL {
		return fmt.Errorf("[spiffe] x509_svid_ttl %q: want a duration from %s to %s, like \"1h\"", c.SPIFFE.X509SVIDTTL, minX509SVIDTTL, maxX509SVIDTTL)
	}
	if d, err := time.ParseDuration(c.SPIFFE.JWTSVIDTTL); err != nil || d < minJWTSVIDTTL || d > maxJWTSVIDTTL {
		return fmt.Errorf("[spiffe] jwt_svid_ttl %q: want a duration from %s to %s, like \"5m\"", c.SPIFFE.JWTSVIDTTL, minJWTSVIDTTL, maxJWTSVIDTTL)
	}
	switch c.SPIFFE.Issuer {
	case IssuerLocal:
	case IssuerSPIRE:
		if c.SPIFFE.TrustDomain == "" {
			return errors.New("[spiffe] issuer = \"spire\" needs trust_domain: the SPIRE server's trust domain")
		}
		if c.SPIFFE.Root != SPIFFERootSeed {
			return fmt.Errorf("[spiffe] root = %q is the local CA's: with issuer = \"spire\" the SPIRE server holds the roots; remove root", c.SPIFFE.Root)
		}
	default:
		return fmt.Errorf("[spiffe] issuer %q: want %q or %q", c.SPIFFE.Issuer, IssuerLocal, IssuerSPIRE)
	}
	if s := c.SPIRE.AdminSocket; !filepath.IsAbs(s) || filepath.Clean(s) != s || len(s) > maxSocketPath {
		return fmt.Errorf("[spire] admin_socket %q: want a clean absolute path of at most %d bytes", s, maxSocketPath)
	}
	if err := c.validateSPIFFERoot(); err != nil {
		return err
	}
	if err := c.validateMeasure(); err != nil {
		return err
	}
	if err := c.validateFederation(); err != nil {
		return err
	}
	if c.API.Enable && c.Agent.Socket == "" {
		return errors.New("[api] enable = true needs the agent: set [agent] socket")
	}
	if d := c.Shim.Delegate; d == "" || strings.ContainsRune(d, '/') && (!filepath.IsAbs(d) || filepath.Clean(d) != d) {
		return fmt.Errorf("[shim] delegate %q: want a binary name (containerd-shim-runc-v2) or a clean absolute path", d)
	}
	if d := c.Runtime.Delegate; d == "" || strings.ContainsRune(d, '/') && (!filepath.IsAbs(d) || filepath.Clean(d) != d) {
		return fmt.Errorf("[runtime] delegate %q: want a binary name (runc, crun) or a clean absolute path", d)
	}
	if c.NRI.Enable && c.Agent.Socket == "" {
		return errors.New("[nri] enable = true needs the agent, which runs the plugin: set [agent] socket")
	}
	if s := c.NRI.Socket; !filepath.IsAbs(s) || filepath.Clean(s) != s || len(s) > maxSocketPath {
		return fmt.Errorf("[nri] socket %q: want a clean absolute path of at most %d bytes", s, maxSocketPath)
	}
	if s := c.Agent.Socket; s != "" {
		switch {
		case !filepath.IsAbs(s) || filepath.Clean(s) != s:
			return fmt.Errorf("[agent] socket %q must be a clean absolute path", s)
		case filepath.Dir(s) == "/":
			// The agent owns the socket's directory and makes it 0700.
			return fmt.Errorf("[agent] socket %q must be inside a directory of its own, not in /", s)
		case len(s) > maxSocketPath:
			return fmt.Errorf("[agent] socket %q is longer than %d bytes", s, maxSocketPath)
		}
	}
	return nil
}

// SecretMode returns the validated [secret] mode.
func (c *Config) SecretMode() os.FileMode {
	m, _ := secretfs.ParseMode(c.Secret.Mode) // validated by Load
	return m
}

// DefaultPathFor returns the config path used when neither --config nor
// NORTHSTAR_CONFIG is given (package config/peek, which finds the file
// for the processes that do not load it).
func DefaultPathFor(rootless bool) string { return peek.DefaultPathFor(rootless) }

// Discover returns the config path: flag if set, else $NORTHSTAR_CONFIG,
// else DefaultPathFor(Rootless()).
func Discover(flag string) string { return peek.Discover(flag) }

// Rootless reports whether this process runs as a rootless runtime would:
// not root, or root inside rootlesskit's user namespace.
func Rootless() bool { return peek.Rootless() }
