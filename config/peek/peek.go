// SPDX-License-Identifier: Apache-2.0

// Package peek finds the northstar config file and reads one setting of
// it without loading it (package config): for northstar-agent-hook, which runs on
// every container start on a host with the agent, and whose process
// would spend more on decoding the whole file into config's types (and on
// initialising what config links) than on the rest of its work.
//
// It knows the file's TOML, not its meaning: a setting it finds is the
// value config.Load would decode, unchecked. The agent hook only uses it
// to find the agent, which loaded and checked the file itself and refuses
// a hook whose file changed since.
package peek

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/northstar-oci/northstar/internal/capped"
)

// EnvConfig names the environment variable that overrides the config path.
const EnvConfig = "NORTHSTAR_CONFIG"

// DefaultPath is the rootful config path.
const DefaultPath = "/etc/northstar/config.toml"

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

// maxSize bounds the file, as config.Load does.
const maxSize = 64 << 10

// AgentSocket returns [agent] socket of the config file at path: "" when
// the file sets none (config's default: no agent).
func AgentSocket(path string) (string, error) {
	return String(path, "agent", "socket")
}

// String returns the string at key (its dotted path: table, then key) of
// the TOML file at path, "" when the file does not set it.
func String(path string, key ...string) (string, error) {
	data, err := capped.ReadFile(path, maxSize, "config "+path)
	if err != nil {
		return "", err
	}
	v, err := find(data, key)
	if err != nil {
		return "", fmt.Errorf("config %s: %w", path, err)
	}
	return v, nil
}

// find walks the document's expressions: table headers set the path of
// the key-values below them; dotted keys and inline tables extend it.
func find(data []byte, key []string) (string, error) {
	p := unstable.Parser{}
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyOf(e.Key())
		case unstable.KeyValue:
			if v, ok, err := lookIn(e, table, key); ok || err != nil {
				return v, err
			}
		}
	}
	return "", p.Error()
}

// lookIn looks for key in the key-value kv under the path prefix.
func lookIn(kv *unstable.Node, prefix, key []string) (string, bool, error) {
	path := append(slices.Clip(prefix), keyOf(kv.Key())...)
	v := kv.Value()
	switch {
	case slices.Equal(path, key) && v.Kind == unstable.String:
		return string(v.Data), true, nil
	case slices.Equal(path, key):
		return "", false, fmt.Errorf("%s is a %s, not a string", strings.Join(key, "."), v.Kind)
	case v.Kind == unstable.InlineTable && len(path) < len(key) && slices.Equal(path, key[:len(path)]):
		it := v.Children()
		for it.Next() {
			if s, ok, err := lookIn(it.Node(), path, key); ok || err != nil {
				return s, ok, err
			}
		}
	}
	return "", false, nil
}

// keyOf is the parts of a (dotted) key.
func keyOf(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}
