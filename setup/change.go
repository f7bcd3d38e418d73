// SPDX-License-Identifier: Apache-2.0

// Package setup wires northstar into a runtime's configuration files the
// way `nvidia-ctk runtime configure` does: it plans every change first
// (a Change per file, whole new content), so that --dry-run can print
// exactly what a run would write and a second run finds nothing to do;
// then Apply writes each file atomically, backing up what it replaces.
//
// It never edits a file it cannot parse, and it checks every edit by
// parsing the result: apart from what northstar adds, the file must mean
// what it meant before.
package setup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/northstar-oci/northstar/internal/atomicfile"
)

// Change is one file to write.
type Change struct {
	Path string
	Old  []byte // the content now; nil when the file does not exist
	New  []byte
	Mode os.FileMode // of a new file; an existing file keeps its own
	Why  string      // one line: what the change does
}

// Apply writes the changes in order: each file atomically and durably,
// after copying an existing one aside (<path>.northstar-<time>.bak, mode
// 0600). A file that changed on disk since it was planned is not
// overwritten: the run fails naming it. It returns the backups made.
func Apply(changes []Change, now time.Time) (backups []string, err error) {
	stamp := now.UTC().Format("20060102T150405Z")
	for _, c := range changes {
		cur, err := os.ReadFile(c.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			cur = nil
		case err != nil:
			return backups, fmt.Errorf("%s: %w", c.Path, err)
		}
		if !bytes.Equal(cur, c.Old) || (cur == nil) != (c.Old == nil) {
			return backups, fmt.Errorf("%s changed while setup ran; run it again", c.Path)
		}
		mode := c.Mode
		if fi, err := os.Stat(c.Path); err == nil {
			mode = fi.Mode().Perm()
			bak := c.Path + ".northstar-" + stamp + ".bak"
			if err := atomicfile.Write(bak, cur, 0o600); err != nil {
				return backups, fmt.Errorf("back up %s: %w", c.Path, err)
			}
			backups = append(backups, bak)
		}
		if err := os.MkdirAll(filepath.Dir(c.Path), 0o755); err != nil {
			return backups, err
		}
		if err := atomicfile.Write(c.Path, c.New, mode); err != nil {
			return backups, fmt.Errorf("write %s: %w", c.Path, err)
		}
	}
	return backups, nil
}

// Describe prints what the change would write: the whole content of a new
// file, else the lines it removes (-) and adds (+) with a line of context.
func (c Change) Describe(w io.Writer) {
	if c.Old == nil {
		fmt.Fprintf(w, "create %s (%s):\n", c.Path, c.Why)
		for _, l := range lines(c.New) {
			fmt.Fprintf(w, "  + %s\n", l)
		}
		return
	}
	fmt.Fprintf(w, "edit %s (%s):\n", c.Path, c.Why)
	for _, l := range diff(lines(c.Old), lines(c.New)) {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

func lines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// diff is a line diff by longest common subsequence (config files are a
// few hundred lines): changed lines with "- " or "+ ", unchanged
// neighbours of a change with "  ", runs of other unchanged lines as "...".
func diff(a, b []string) []string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var all []line
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			all = append(all, line{' ', a[i]})
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			all = append(all, line{'+', b[j]})
			j++
		default:
			all = append(all, line{'-', a[i]})
			i++
		}
	}
	near := func(k int) bool {
		for d := -1; d <= 1; d++ {
			if k+d >= 0 && k+d < len(all) && all[k+d].op != ' ' {
				return true
			}
		}
		return false
	}
	var out []string
	skipped := false
	for k, l := range all {
		if l.op == ' ' && !near(k) {
			if !skipped {
				out = append(out, "...")
				skipped = true
			}
			continue
		}
		skipped = false
		out = append(out, string(l.op)+" "+l.text)
	}
	return out
}
