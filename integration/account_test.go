// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// testUser is the unprivileged account scripts/setup.sh creates, with
// subordinate uid/gid ranges for rootless runs.
const testUser = "nstest"

// account is an unprivileged user the rootless tests run commands as.
type account struct {
	name     string
	uid, gid uint32
	home     string
}

// unprivileged returns the test user or fails/skips like requires.
func unprivileged(t *testing.T) *account {
	t.Helper()
	u, err := user.Lookup(testUser)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("user %s missing (scripts/setup.sh creates it): %v", testUser, err)
		}
		t.Skipf("user %s missing (run scripts/setup.sh)", testUser)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &account{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
}

// apply makes cmd run as the account, with a minimal login-like env and a
// private XDG_RUNTIME_DIR.
func (a *account) apply(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: []uint32{}}}
	cmd.Env = append(cmd.Env,
		"HOME="+a.home, "USER="+a.name, "LOGNAME="+a.name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	)
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
}

// chownR hands a directory tree to the account.
func (a *account) chownR(t *testing.T, dir string) {
	t.Helper()
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(a.uid), int(a.gid))
	})
	if err != nil {
		t.Fatal(err)
	}
}
