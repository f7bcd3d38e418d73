// SPDX-License-Identifier: Apache-2.0

package entry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Config is a bundle's config.json as the shim reads it to hand the
// runtime the agent's mounts instead of the hook (DESIGN.md §19): the
// members it decides on, decoded, and the document, to write back with
// WithMounts. Like Rewrite, it decodes only what it reads (the
// annotations, the process's user and env, the namespaces, the root's
// propagation, the mounts' options, the hooks) the way runc reads them,
// and carries every other member over byte for byte.
type Config struct {
	// Spec holds the decoded members: Annotations, Process (User, Env),
	// Linux (Namespaces, RootfsPropagation), Mounts, Hooks.
	Spec    specs.Spec
	members []member
	// the last member runc takes for the process and the mounts (-1: none)
	lastProcess, lastMounts int
}

// ParseConfig reads config.json data.
func ParseConfig(data []byte) (*Config, error) {
	members, err := splitObject(data)
	if err != nil {
		return nil, fmt.Errorf("config.json is not an OCI spec: %w", err)
	}
	c := &Config{members: members, lastProcess: -1, lastMounts: -1}
	for i, m := range members {
		var err error
		switch {
		case strings.EqualFold(m.key, "annotations"):
			err = json.Unmarshal(m.value, &c.Spec.Annotations)
		case strings.EqualFold(m.key, "hooks"):
			err = json.Unmarshal(m.value, &c.Spec.Hooks)
		case strings.EqualFold(m.key, "mounts"):
			err = json.Unmarshal(m.value, &c.Spec.Mounts)
			c.lastMounts = i
		case strings.EqualFold(m.key, "process"):
			var p *struct {
				User specs.User `json:"user"`
				Env  []string   `json:"env"`
			}
			if err = json.Unmarshal(m.value, &p); err == nil {
				c.Spec.Process = nil
				if p != nil {
					c.Spec.Process = &specs.Process{User: p.User, Env: p.Env}
				}
			}
			c.lastProcess = i
		case strings.EqualFold(m.key, "linux"):
			var l *struct {
				Namespaces        []specs.LinuxNamespace `json:"namespaces"`
				RootfsPropagation string                 `json:"rootfsPropagation"`
			}
			if err = json.Unmarshal(m.value, &l); err == nil {
				c.Spec.Linux = nil
				if l != nil {
					c.Spec.Linux = &specs.Linux{Namespaces: l.Namespaces, RootfsPropagation: l.RootfsPropagation}
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("config.json is not an OCI spec: %s: %w", m.key, err)
		}
	}
	return c, nil
}

// WithMounts returns the document with mounts appended to its mounts (the
// runtime mounts them after every other), every northstar hook dropped,
// and, unless the container opts out of the API, apiEnv added to its
// process's environment as Rewrite adds it.
func (c *Config) WithMounts(mounts []specs.Mount, apiEnv ...string) ([]byte, error) {
	var env []string
	envChanged := false
	if len(apiEnv) > 0 && c.Spec.Process != nil && c.Spec.Annotations[AnnotationAPIDisable] != "true" {
		env, envChanged = withEnv(c.Spec.Process.Env, apiEnv)
	}
	hooksChanged := c.Spec.Hooks != nil && countNorthstar(c.Spec.Hooks) > 0
	var parts [][]byte
	for i, m := range c.members {
		switch {
		case hooksChanged && strings.EqualFold(m.key, "hooks"):
			continue
		case envChanged && i == c.lastProcess:
			p, err := withProcessEnv(m, env)
			if err != nil {
				return nil, err
			}
			parts = append(parts, p)
		case i == c.lastMounts && len(mounts) > 0:
			p, err := appendMounts(m, mounts)
			if err != nil {
				return nil, err
			}
			parts = append(parts, p)
		default:
			parts = append(parts, m.text)
		}
	}
	if c.lastMounts < 0 && len(mounts) > 0 {
		ms, err := marshalNoEscape(mounts)
		if err != nil {
			return nil, err
		}
		parts = append(parts, append([]byte(`"mounts":`), ms...))
	}
	if hooksChanged {
		h := *c.Spec.Hooks
		h.Prestart = dropNorthstar(h.Prestart) //nolint:staticcheck // deprecated but still run by runc
		h.CreateRuntime = dropNorthstar(h.CreateRuntime)
		h.CreateContainer = dropNorthstar(h.CreateContainer)
		h.StartContainer = dropNorthstar(h.StartContainer)
		h.Poststart = dropNorthstar(h.Poststart)
		h.Poststop = dropNorthstar(h.Poststop)
		hooks, err := marshalNoEscape(&h)
		if err != nil {
			return nil, fmt.Errorf("encode hooks: %w", err)
		}
		parts = append(parts, append([]byte(`"hooks":`), hooks...))
	}
	out := make([]byte, 0, len(c.members)*64+1024)
	out = append(out, '{')
	out = append(out, bytes.Join(parts, []byte(","))...)
	return append(out, "}\n"...), nil
}

// appendMounts returns the mounts member m with mounts appended to its
// array, the array's own text kept (members of a mount this version of
// runtime-spec does not know stay).
func appendMounts(m member, mounts []specs.Mount) ([]byte, error) {
	v := bytes.TrimSpace(m.value)
	if bytes.Equal(v, []byte("null")) {
		v = []byte("[]")
	}
	if len(v) < 2 || v[0] != '[' || v[len(v)-1] != ']' {
		return nil, fmt.Errorf("config.json mounts is not an array")
	}
	add, err := marshalNoEscape(mounts)
	if err != nil {
		return nil, err
	}
	key, err := marshalNoEscape(m.key)
	if err != nil {
		return nil, err
	}
	out := append(append(key, ':'), v[:len(v)-1]...)
	if len(bytes.TrimSpace(v[1:len(v)-1])) > 0 {
		out = append(out, ',')
	}
	out = append(out, add[1:]...)
	return out, nil
}
