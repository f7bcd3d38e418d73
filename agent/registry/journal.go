// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A registration is recorded before the agent answers it (a restarted
// agent must find every container it answered), and rewriting
// registry.json for it (every entry, a new file, a rename: about a
// millisecond on ext4, DESIGN.md §19) was most of the agent's part of a
// container start. So a new registration is one line appended to
// registry.journal, one write(2); the next full save (a container gone, a
// rotation) folds the journal into registry.json and empties it.
//
// Crash-safe as registry.json is: a write(2) that returned is in the page
// cache, which an agent that crashes does not lose; after a host crash
// there is no container to take back. A line that does not parse (a write
// cut short by a full disk) is skipped, as a registration that did not
// happen: the agent answered it with an error.
const journal = "registry.journal"

// record appends e to the journal. The caller has listed e (in byKey),
// so that a save that runs meanwhile has it in its snapshot or comes
// before the append.
func (c *Containers) record(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if c.isClosed() {
		return errors.New("the registry is closed")
	}
	if c.journal == nil {
		// Opened once and kept: the open took longer than the write
		// (0.13 ms against 0.05 ms in a trace on this VM's ext4).
		// foldedJournal truncates the same file, and O_APPEND writes at
		// its end whatever its length.
		f, err := os.OpenFile(filepath.Join(c.dir, journal), os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		c.journal = f
	}
	_, err = c.journal.Write(append(line, '\n'))
	return err
}

// closeJournal closes the journal record keeps open.
func (c *Containers) closeJournal() {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if c.journal != nil {
		c.journal.Close()
		c.journal = nil
	}
}

// foldedJournal empties the journal once registry.json holds everything
// in it. The caller holds saveMu.
func (c *Containers) foldedJournal() error {
	err := os.Truncate(filepath.Join(c.dir, journal), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// readJournal adds the journal in dir to s: entries of keys s does not
// list, and newer versions of those it does.
func readJournal(dir string, s *Saved) error {
	f, err := os.Open(filepath.Join(dir, journal))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	at := map[string]int{}
	for i, e := range s.Containers {
		at[keyOf(e)] = i
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 && err == nil {
			var e Entry
			if json.Unmarshal(line, &e) == nil {
				if i, ok := at[keyOf(e)]; ok {
					s.Containers[i] = e
				} else {
					at[keyOf(e)] = len(s.Containers)
					s.Containers = append(s.Containers, e)
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func keyOf(e Entry) string {
	k, _ := json.Marshal(e.Registration)
	return string(k)
}
