// SPDX-License-Identifier: Apache-2.0

package lifecycle

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestStatStartTime(t *testing.T) {
	// Field 22 is starttime; fields are counted after the last ')', since
	// the command name may hold spaces and parentheses.
	tail := "S 1 1 1 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 424242 1000 10 18446744073709551615"
	tests := []struct {
		description string
		stat        string
		want        uint64
		wantErr     bool
	}{
		{"plain name", "1234 (containerd) " + tail, 424242, false},
		{"name with spaces and parens", "1234 (a) (b c) d) " + tail, 424242, false},
		{"name that looks like fields", "1234 (S 1 1 1 0 9 9 9 9 9) " + tail, 424242, false},
		{"no parentheses", "1234 containerd " + tail, 0, true},
		{"truncated", "1234 (containerd) S 1 1", 0, true},
		{"starttime not a number", "1234 (containerd) " + strings.Replace(tail, "424242", "x", 1), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.description, func(t *testing.T) {
			got, err := statStartTime([]byte(tt.stat))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("StatStartTime = %d, %v; want %d (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestLifecycleID(t *testing.T) {
	id, err := ID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^boot:[0-9a-f-]{36}/pid:(\d+)/start:\d+$`)
	m := re.FindStringSubmatch(id)
	if m == nil || m[1] != fmt.Sprint(os.Getpid()) {
		t.Fatalf("ID = %q, want boot:<uuid>/pid:%d/start:<ticks>", id, os.Getpid())
	}
	again, _ := ID(os.Getpid())
	if again != id {
		t.Errorf("same process, two ids: %q, %q", id, again)
	}
	other, err := ID(os.Getppid())
	if err != nil || other == id {
		t.Errorf("parent process id %q (%v), want another id than %q", other, err, id)
	}
	if _, err := ID(1 << 30); err == nil {
		t.Error("id of a process that does not exist")
	}
}
