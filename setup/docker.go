// SPDX-License-Identifier: Apache-2.0

package setup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// DockerRuntime is the name `setup docker` gives northstar-runtime in
// daemon.json: `docker run --runtime northstar`.
const DockerRuntime = "northstar"

// Docker is what `northstarctl setup docker` wires: a runtime in dockerd's
// daemon.json, as `nvidia-ctk runtime configure --runtime=docker` adds
// nvidia's. Docker 20.10 (Debian 12's docker.io) runs only runc-compatible
// runtime binaries ("runtimes": {"name": {"path": ...}}), so the runtime is
// northstar-runtime, which adds the hook and execs runc.
type Docker struct {
	Config  string // daemon.json
	Runtime string // northstar-runtime's absolute path
	// Default makes northstar dockerd's default runtime
	// ("default-runtime"): every `docker run` without --runtime gets the
	// secret; `--runtime runc` opts a container out.
	Default bool
}

// Plan returns the change to daemon.json; none when it wires northstar
// already. Every other member of the file, at any depth, keeps its value
// and its place (json.Indent of the members as they were: only the
// whitespace between tokens may change); members of "runtimes" other than
// northstar stay as they were. A file that is not one JSON object is
// refused, naming the line.
func (d *Docker) Plan() (*Plan, error) {
	old, err := readOptional(d.Config)
	if err != nil {
		return nil, err
	}
	var top []jsonMember
	if len(bytes.TrimSpace(old)) > 0 {
		if top, err = jsonObject(d.Config, old); err != nil {
			return nil, err
		}
	}
	want, err := json.Marshal(map[string]string{"path": d.Runtime})
	if err != nil {
		return nil, err
	}
	changed := false
	i := find(top, "runtimes")
	if i < 0 {
		top = append(top, jsonMember{key: "runtimes", value: []byte("{}")})
		i = len(top) - 1
	}
	runtimes, err := jsonObject(d.Config, top[i].value)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.Line = 0
			pe.Err = fmt.Errorf("\"runtimes\" is not an object: %w", pe.Err)
		}
		return nil, err
	}
	if j := find(runtimes, DockerRuntime); j < 0 {
		runtimes = append(runtimes, jsonMember{key: DockerRuntime, value: want})
		changed = true
	} else if !jsonEqual(runtimes[j].value, want) {
		runtimes[j].value = want
		changed = true
	}
	if changed {
		top[i].value = encodeObject(runtimes)
	}
	if d.Default {
		def, _ := json.Marshal(DockerRuntime)
		if j := find(top, "default-runtime"); j < 0 {
			top = append(top, jsonMember{key: "default-runtime", value: def})
			changed = true
		} else if !jsonEqual(top[j].value, def) {
			top[j].value = def
			changed = true
		}
	}
	p := &Plan{Notes: d.notes()}
	if !changed {
		return p, nil
	}
	var out bytes.Buffer
	if err := json.Indent(&out, encodeObject(top), "", "  "); err != nil {
		return nil, fmt.Errorf("encode %s: %w", d.Config, err)
	}
	out.WriteByte('\n')
	if err := d.check(old, out.Bytes()); err != nil {
		return nil, err
	}
	why := "the runtime " + DockerRuntime
	if d.Default {
		why += ", dockerd's default"
	}
	p.Changes = append(p.Changes, Change{Path: d.Config, Old: old, New: out.Bytes(), Mode: 0o644, Why: why})
	return p, nil
}

func (d *Docker) notes() []string {
	n := []string{"dockerd reloads its runtimes on SIGHUP (systemctl reload docker); setup does not signal or restart it"}
	if d.Default {
		return append(n, "every container gets the secret now; 'docker run --runtime runc' starts one without it")
	}
	return append(n, "'docker run --runtime "+DockerRuntime+"' starts a container with the secret ('setup docker --default' makes it the default)")
}

// check parses what the plan writes: the old document with runtimes.northstar
// (and default-runtime) set, nothing else.
func (d *Docker) check(oldData, newData []byte) error {
	var before, after map[string]any
	if len(bytes.TrimSpace(oldData)) > 0 {
		if err := json.Unmarshal(oldData, &before); err != nil {
			return fmt.Errorf("check %s: %w", d.Config, err)
		}
	}
	if err := json.Unmarshal(newData, &after); err != nil {
		return fmt.Errorf("check %s: %w", d.Config, err)
	}
	if before == nil {
		before = map[string]any{}
	}
	rt, _ := before["runtimes"].(map[string]any)
	if rt == nil {
		rt = map[string]any{}
	}
	rt[DockerRuntime] = map[string]any{"path": d.Runtime}
	before["runtimes"] = rt
	if d.Default {
		before["default-runtime"] = DockerRuntime
	}
	if !reflect.DeepEqual(before, after) {
		return fmt.Errorf("check %s: the edit would change more than the runtime %s", d.Config, DockerRuntime)
	}
	return nil
}

// jsonMember is one member of a JSON object, its value as written.
type jsonMember struct {
	key   string
	value json.RawMessage
}

// jsonObject returns the members of the JSON object data in order, or a
// ParseError naming the line of the first error.
func jsonObject(path string, data []byte) ([]jsonMember, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	fail := func(err error) error {
		off := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("unexpected end of JSON input")
			off = int64(len(data))
		}
		return &ParseError{Path: path, Line: 1 + bytes.Count(data[:min(int(off), len(data))], []byte("\n")), Err: err}
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(err)
	}
	if tok != json.Delim('{') {
		return nil, fail(errors.New("not a JSON object"))
	}
	var members []jsonMember
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fail(err)
		}
		key, _ := tok.(string)
		if seen[key] {
			// dockerd would take one of them; which one it means is a
			// guess setup does not make.
			return nil, fail(fmt.Errorf("%q appears twice", key))
		}
		seen[key] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, fail(err)
		}
		members = append(members, jsonMember{key: key, value: value})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fail(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fail(errors.New("data after the object"))
	}
	return members, nil
}

func find(ms []jsonMember, key string) int {
	for i, m := range ms {
		if m.key == key {
			return i
		}
	}
	return -1
}

// encodeObject writes members as one JSON object, values as they are.
func encodeObject(ms []jsonMember) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// jsonEqual reports whether two JSON values mean the same.
func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}
