// SPDX-License-Identifier: Apache-2.0

package setup

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// table is a TOML table northstar sets keys in, with the keys in the
// order they are written.
type table struct {
	path []string
	keys []keyValue
}

type keyValue struct {
	key string
	val any // string, bool or []string
}

// render writes tables as TOML.
func render(tables []table) string {
	var b strings.Builder
	for i, t := range tables {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString("[" + headerPath(t.path) + "]\n")
		for _, kv := range t.keys {
			fmt.Fprintf(&b, "  %s = %s\n", kv.key, literal(kv.val))
		}
	}
	return b.String()
}

// headerPath is a table header's dotted key: bare where TOML allows it,
// else quoted, as containerd's docs write them.
func headerPath(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		if bareKey(p) {
			parts[i] = p
		} else {
			parts[i] = fmt.Sprintf("%q", p)
		}
	}
	return strings.Join(parts, ".")
}

func bareKey(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func literal(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case bool:
		return fmt.Sprint(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	panic(fmt.Sprintf("setup: no TOML literal for %T", v))
}

// ParseError is a config file setup cannot read: it edits nothing then.
type ParseError struct {
	Path string
	Line int // 0: unknown
	Err  error
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %v", e.Path, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// parseTOML decodes a config file, or says which line of it is wrong.
func parseTOML(path string, data []byte) (map[string]any, error) {
	m := map[string]any{}
	if err := toml.NewDecoder(bytes.NewReader(data)).Decode(&m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			return nil, &ParseError{Path: path, Line: row, Err: errors.New(strings.TrimPrefix(de.Error(), "toml: "))}
		}
		return nil, &ParseError{Path: path, Err: err}
	}
	return m, nil
}

// lookup returns the table at path in a decoded document.
func lookup(m map[string]any, path []string) (map[string]any, bool) {
	for _, p := range path {
		next, ok := m[p].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	return m, true
}

// leaves flattens a decoded document into its values by full key path:
// two documents mean the same when their leaves are equal.
func leaves(m map[string]any) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + "\x00" + k
			if sub, ok := v.(map[string]any); ok {
				walk(key, sub)
				continue
			}
			out[key] = v
		}
	}
	walk("", m)
	return out
}

// leafKey is the leaves key of key in the table at path.
func leafKey(path []string, key string) string {
	return "\x00" + strings.Join(append(append([]string(nil), path...), key), "\x00")
}

// sameExcept reports whether two decoded documents have the same values
// but for the keys listed (leafKey).
func sameExcept(a, b map[string]any, except ...string) bool {
	la, lb := leaves(a), leaves(b)
	for _, k := range except {
		delete(la, k)
		delete(lb, k)
	}
	return reflect.DeepEqual(la, lb)
}

// equalValue compares a decoded TOML value with one of ours.
func equalValue(decoded, ours any) bool {
	switch o := ours.(type) {
	case []string:
		d, ok := decoded.([]any)
		if !ok || len(d) != len(o) {
			return false
		}
		for i := range o {
			if d[i] != o[i] {
				return false
			}
		}
		return true
	default:
		return decoded == ours
	}
}
