// Package config loads northstar's one settings file (TOML). The key names are
// part of the contract in DESIGN.md; unknown keys are rejected so a typo does
// not silently fall back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// EnvConfig names the environment variable that overrides the config path.
const EnvConfig = "NORTHSTAR_CONFIG"

// DefaultPath is the rootful config path.
const DefaultPath = "/etc/northstar/config.toml"

// maxConfigSize caps the config file; it is a few hundred bytes in practice.
const maxConfigSize = 64 << 10

// Sealer kinds.
const (
	SealerTPM  = "tpm"
	SealerHost = "host"
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

	// Path is where the config was read from ("" for defaults).
	Path string `toml:"-"`
}

// TPM selects the TPM and the PCRs the secret is bound to.
type TPM struct {
	Path string `toml:"path"`
	PCRs []int  `toml:"pcrs"`
}

// Secret describes the in-container file.
type Secret struct {
	Dir  string `toml:"dir"`
	Mode string `toml:"mode"`
}

// Rotation says when a new lifecycle secret is made.
type Rotation struct {
	On string `toml:"on"`
}

// Agent configures the opt-in per-lifecycle agent (northstarctl agent) that
// keeps the unsealed secret off the TPM for each container start. Off by
// default: per-start unsealing keeps the plaintext lifetime to milliseconds
// and checks the PCR policy at every start.
type Agent struct {
	// Socket is the agent's pathname unix socket; "" disables the agent.
	Socket string `toml:"socket"`
}

// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
const maxSocketPath = 107

// Default returns the settings used when a key is absent.
func Default() *Config {
	return &Config{
		StateDir: "/var/lib/northstar",
		Sealer:   SealerTPM,
		TPM:      TPM{Path: "/dev/tpmrm0", PCRs: []int{}},
		Secret:   Secret{Dir: "/run/northstar", Mode: "0400"},
		Rotation: Rotation{On: RotateOnRuntimeRestart},
	}
}

// Load reads and validates the config at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist; create it (see 'northstarctl config --help') or pass --config", path)
		}
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("config %s is larger than %d bytes", path, maxConfigSize)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = path
	return c, nil
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
	seen := map[int]bool{}
	for _, p := range c.TPM.PCRs {
		if p < 0 || p > 23 {
			return fmt.Errorf("[tpm] pcrs: PCR %d out of range 0-23", p)
		}
		if seen[p] {
			return fmt.Errorf("[tpm] pcrs: PCR %d listed twice", p)
		}
		seen[p] = true
	}
	if c.Secret.Dir != "/run/northstar" {
		// The in-container path is part of the contract; a configurable
		// target would also be a configurable attack surface.
		return fmt.Errorf("[secret] dir %q: only /run/northstar is supported", c.Secret.Dir)
	}
	if _, err := ParseMode(c.Secret.Mode); err != nil {
		return fmt.Errorf("[secret] mode: %w", err)
	}
	switch c.Rotation.On {
	case RotateOnRuntimeRestart, RotateManual:
	default:
		return fmt.Errorf("[rotation] on %q: want %q or %q", c.Rotation.On, RotateOnRuntimeRestart, RotateManual)
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
	m, _ := ParseMode(c.Secret.Mode) // validated by Load
	return m
}

// ParseMode parses an octal file mode for the secret file. Only read bits are
// allowed: the file lives on a read-only mount and must never be executable.
func ParseMode(s string) (os.FileMode, error) {
	if s == "" || len(s) > 4 {
		return 0, fmt.Errorf("%q is not an octal mode like 0400", s)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an octal mode like 0400", s)
	}
	if v&^0o444 != 0 {
		return 0, fmt.Errorf("%q has bits other than read (at most 0444)", s)
	}
	if v == 0 {
		return 0, fmt.Errorf("%q grants no read access", s)
	}
	return os.FileMode(v), nil
}

// DefaultPathFor returns the config path used when neither --config nor
// NORTHSTAR_CONFIG is given: the rootful path, or, for a rootless runtime,
// $XDG_CONFIG_HOME/northstar/config.toml.
func DefaultPathFor(rootless bool) string {
	if !rootless {
		return DefaultPath
	}
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home := os.Getenv("HOME")
		if home == "" {
			home = "/"
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "northstar", "config.toml")
}

// Discover returns the config path: flag, then NORTHSTAR_CONFIG, then the
// default for this process (rootless when not root or inside rootlesskit).
func Discover(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}
	return DefaultPathFor(Rootless())
}

// Rootless reports whether this process runs as a rootless runtime would:
// not root, or root inside rootlesskit's user namespace.
func Rootless() bool {
	if os.Geteuid() != 0 {
		return true
	}
	if os.Getenv("ROOTLESSKIT_STATE_DIR") != "" {
		return true
	}
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	// The initial user namespace maps the whole 32-bit range from 0.
	f := strings.Fields(string(data))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}
