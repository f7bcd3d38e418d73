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

	"github.com/northstar-oci/northstar/agent/control"
)

// A registration is recorded before the agent answers it (a restarted
// agent must find every container it answered), and rewriting
// registry.json for it (every entry, a new file, a rename: about a
// millisecond on ext4, DESIGN.md §19) was most of the agent's part of a
// container start. So a new registration is one line appended to
// registry.journal, one write(2); the next full save (a container gone, a
// rotation) folds the journal into registry.json and empties it.
//
// A container gone is one line too ({"gone": its registration}): the full
// save it was had the agent rename registry.json in the directory where
// the next container's start makes its API directory, and that start
// waited on the directory's lock (0.4 ms of a mkdir, measured with the
// agent's own timings on this VM's ext4, docs/performance.md). After
// maxJournalLines lines the next one folds the journal.
//
// Crash-safe as registry.json is: a write(2) that returned is in the page
// cache, which an agent that crashes does not lose; after a host crash
// there is no container to take back. A line that does not parse (a write
// cut short by a full disk) is skipped, as a registration that did not
// happen: the agent answered it with an error.
const journal = "registry.journal"

// maxJournalLines is how long the journal grows before a removal folds
// it into registry.json: a restarted agent reads it line by line.
const maxJournalLines = 1024

// goneLine is a journal line saying a registration is gone.
type goneLine struct {
	Gone *control.Registration `json:"gone"`
}

// record appends e to the journal. The caller has listed e (in byKey),
// so that a save that runs meanwhile has it in its snapshot or comes
// before the append.
func (c *Containers) record(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return c.appendJournal(line)
}

// recordGone appends r's removal to the journal, or folds the journal
// when it is long (or cannot be appended to). The caller has removed r
// from byKey, so that a save meanwhile does not list it.
func (c *Containers) recordGone(r control.Registration) error {
	line, err := json.Marshal(goneLine{Gone: &r})
	if err != nil {
		return err
	}
	c.saveMu.Lock()
	long := c.journalLines >= maxJournalLines
	c.saveMu.Unlock()
	if long || c.appendJournal(line) != nil {
		return c.save()
	}
	return nil
}

// appendJournal appends line to the journal.
func (c *Containers) appendJournal(line []byte) error {
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
	if _, err := c.journal.Write(append(line, '\n')); err != nil {
		return err
	}
	c.journalLines++
	return nil
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
	c.journalLines = 0
	err := os.Truncate(filepath.Join(c.dir, journal), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// readJournal adds the journal in dir to s: entries of keys s does not
// list, and newer versions of those it does; and it removes those a line
// says are gone.
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
	gone := map[int]bool{} // indexes in s.Containers
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 && err == nil {
			var g goneLine
			var e Entry
			switch {
			case json.Unmarshal(line, &g) == nil && g.Gone != nil:
				k := keyOf(Entry{Registration: *g.Gone})
				if i, ok := at[k]; ok {
					gone[i] = true
					delete(at, k)
				}
			case json.Unmarshal(line, &e) == nil:
				if i, ok := at[keyOf(e)]; ok {
					s.Containers[i] = e
				} else {
					at[keyOf(e)] = len(s.Containers)
					s.Containers = append(s.Containers, e)
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if len(gone) > 0 {
		kept := s.Containers[:0]
		for i, e := range s.Containers {
			if !gone[i] {
				kept = append(kept, e)
			}
		}
		s.Containers = kept
	}
	return nil
}

func keyOf(e Entry) string {
	k, _ := json.Marshal(e.Registration)
	return string(k)
}
