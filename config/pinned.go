// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// Pinned is a config file as a long-running process (the agent) found it
// when it loaded it: the short-lived processes that ask it to do their
// work (the agent hook, the shim's fast path) name the config they found,
// and it serves them only when that is the same file, unchanged since.
type Pinned struct {
	path string
	fi   os.FileInfo // nil: no config file (defaults)
	log  io.Writer

	mu     sync.Mutex
	logged string // the refusal last logged
}

// Pin records the config file at path ("": none) as it is now. Check's
// refusals are logged to log, each once while it repeats: a start not
// served takes the slow way without failing, so the agent's log is where
// an operator learns why.
func Pin(path string, log io.Writer) (*Pinned, error) {
	p := &Pinned{path: path, log: log}
	if path != "" {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		p.fi = fi
	}
	return p, nil
}

// Check refuses path, the config file of who ("the hook", "the shim"),
// unless it is the pinned file and unchanged (inode, size, mtime): who
// then decides from the file as it is now.
func (p *Pinned) Check(path, who string) error {
	err := p.check(path, who)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err == nil:
		p.logged = ""
	case err.Error() != p.logged && p.log != nil:
		p.logged = err.Error()
		fmt.Fprintf(p.log, "agent: not serving the starts of %s: %v\n", who, err)
	}
	return err
}

func (p *Pinned) check(path, who string) error {
	if p.fi == nil {
		return fmt.Errorf("the agent runs without a config file, %s has %s", who, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !os.SameFile(fi, p.fi) {
		return fmt.Errorf("%s's config %s is not the agent's (%s)", who, path, p.path)
	}
	if !fi.ModTime().Equal(p.fi.ModTime()) || fi.Size() != p.fi.Size() {
		return fmt.Errorf("%s changed since the agent started; restart the agent to serve starts with it", path)
	}
	return nil
}
