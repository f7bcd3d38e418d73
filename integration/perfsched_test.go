// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procTrace is the process tree and timeline that the scheduler's
// tracepoints sched_process_{fork,exec,exit} recorded system-wide
// (`perf record -a -e ...`, printed by `perf script -F pid,tid,time,event,trace`).
// Tracepoints cost a few microseconds per event and only at these three
// points, so the traced processes run at full speed (strace stops them at
// every system call).
type procTrace struct {
	parent map[int]int         // pid → the process (tgid) that forked it
	execs  map[int][]execEvent // pid → its execs, in order
	exit   map[int]float64     // pid → when its last thread exited (s)
}

type execEvent struct {
	at   float64 // seconds
	file string
}

// parsePerfSched reads `perf script -F pid,tid,time,event,trace` output
// of the three tracepoints, lines such as
//
//	907/907    5227.964846: sched:sched_process_exec: filename=/tmp/x pid=907 old_pid=907
//	907/907    5227.965647: sched:sched_process_fork: comm=x pid=907 child_comm=x child_pid=909
//	906/912    5227.971241: sched:sched_process_exit: comm=compile pid=912 prio=120 group_dead=true
func parsePerfSched(r io.Reader) (*procTrace, error) {
	pt := &procTrace{parent: map[int]int{}, execs: map[int][]execEvent{}, exit: map[int]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		tgid, _, ok := strings.Cut(f[0], "/")
		pid, err := strconv.Atoi(tgid)
		if !ok || err != nil {
			return nil, fmt.Errorf("line %d: no pid/tid: %q", n, sc.Text())
		}
		at, err := strconv.ParseFloat(strings.TrimSuffix(f[1], ":"), 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: no time: %q", n, sc.Text())
		}
		kv := map[string]string{}
		for _, p := range f[3:] {
			if k, v, ok := strings.Cut(p, "="); ok {
				kv[k] = v
			}
		}
		switch strings.TrimSuffix(f[2], ":") {
		case "sched:sched_process_fork":
			child, err := strconv.Atoi(kv["child_pid"])
			if err != nil {
				return nil, fmt.Errorf("line %d: fork without child_pid: %q", n, sc.Text())
			}
			pt.parent[child] = pid
		case "sched:sched_process_exec":
			pt.execs[pid] = append(pt.execs[pid], execEvent{at: at, file: kv["filename"]})
		case "sched:sched_process_exit":
			if kv["group_dead"] == "true" {
				pt.exit[pid] = at
			}
		}
	}
	return pt, sc.Err()
}

// descends reports whether pid was forked, directly or not, by root.
func (pt *procTrace) descends(pid, root int) bool {
	for hops := 0; hops < 64; hops++ {
		p, ok := pt.parent[pid]
		if !ok {
			return false
		}
		if p == root {
			return true
		}
		pid = p
	}
	return false
}

// execsOf returns the base names of pid's executables, in exec order.
func (pt *procTrace) execsOf(pid int) []string {
	var names []string
	for _, e := range pt.execs[pid] {
		names = append(names, filepath.Base(e.file))
	}
	return names
}

// children returns the processes pid forked.
func (pt *procTrace) children(pid int) []int {
	var kids []int
	for c, p := range pt.parent {
		if p == pid {
			kids = append(kids, c)
		}
	}
	return kids
}

func TestParsePerfSched(t *testing.T) {
	const script = `  899/899    5227.963024: sched:sched_process_exec: filename=/usr/bin/sh pid=899 old_pid=899
  899/899    5227.963690: sched:sched_process_fork: comm=sh pid=899 child_comm=sh child_pid=907
  907/907    5227.964846: sched:sched_process_exec: filename=/tmp/execfloor pid=907 old_pid=907
  907/907    5227.965647: sched:sched_process_fork: comm=execfloor pid=907 child_comm=execfloor child_pid=909
  907/909    5227.966148: sched:sched_process_exit: comm=execfloor pid=909 prio=120 group_dead=false
  907/907    5227.968685: sched:sched_process_exec: filename=/bin/true pid=907 old_pid=907
  907/907    5227.971128: sched:sched_process_exit: comm=true pid=907 prio=120 group_dead=true
  906/912    5227.971241: sched:sched_process_exit: comm=compile pid=912 prio=120 group_dead=true
`
	pt, err := parsePerfSched(strings.NewReader(script))
	if err != nil {
		t.Fatal(err)
	}
	if got := pt.execsOf(907); strings.Join(got, " ") != "execfloor true" {
		t.Errorf("execs of 907: %v", got)
	}
	if e := pt.execs[907]; e[1].at-e[0].at < 0.003838 || e[1].at-e[0].at > 0.003840 {
		t.Errorf("exec to exec: %v", e)
	}
	if pt.exit[907] != 5227.971128 || pt.exit[906] != 5227.971241 {
		t.Errorf("exits: %v (a thread's exit must not count, the group's last must, under its tgid)", pt.exit)
	}
	if !pt.descends(909, 899) || !pt.descends(907, 899) || pt.descends(899, 907) {
		t.Errorf("tree: %v", pt.parent)
	}
	if kids := pt.children(907); len(kids) != 1 || kids[0] != 909 {
		t.Errorf("children of 907: %v", kids)
	}
	if _, err := parsePerfSched(strings.NewReader("x/1 1.0: sched:sched_process_exec: filename=/a\n")); err == nil {
		t.Error("a line without a pid parsed")
	}
}
