// SPDX-License-Identifier: Apache-2.0

package mount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/internal/testenv"
	"github.com/northstar-oci/northstar/internal/testtree"
	"github.com/northstar-oci/northstar/secretfs"
)

// inPrivateMountNS runs fn on a thread with a private copy of the mount
// namespace, so the test's mounts vanish with the thread.
func inPrivateMountNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make / private: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// mountPointOf returns where mount id is mounted, from this thread's view.
func mountPointOf(id uint64) (string, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if fs[0] == fmt.Sprint(id) {
			return fs[4], nil
		}
	}
	return "", errors.New("mount not found in mountinfo")
}

func detachedMountID(m *Mount) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(int(m.fd.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	return stx.Mnt_id, nil
}

// TestAttachInRootHostileImages plants symlinks and files where the secret
// directory goes. Whatever the image does, the host directory it points at
// must stay untouched: the secret either lands inside the rootfs or the
// attach fails.
func TestAttachInRootHostileImages(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces and real mounts")
	tests := []struct {
		name    string
		image   []string
		wantErr bool
		refused bool // by the mount-target check (ErrTargetRefused)
	}{
		{name: "no /run", image: nil},
		{name: "empty /run", image: []string{"dir run"}},
		{name: "existing /run/northstar hides its content", image: []string{"dir run/northstar", "file run/northstar/old"}},
		// A symlink to a host path is resolved inside the rootfs: where that
		// path does not exist in the image, the attach fails...
		{name: "/run absolute symlink to host dir", image: []string{"symlink run $HOST"}, wantErr: true},
		{name: "/run relative symlink climbing out", image: []string{"symlink run ../../../../../../../../$HOST"}, wantErr: true},
		{name: "/run/northstar absolute symlink to host dir", image: []string{"dir run", "symlink run/northstar $HOST"}, wantErr: true},
		{name: "/run/northstar relative symlink climbing out", image: []string{"dir run", "symlink run/northstar ../../../../../../../$HOST"}, wantErr: true},
		{name: "/run symlink chain to host dir", image: []string{"symlink run a", "symlink a b", "symlink b $HOST"}, wantErr: true},
		// ... and where it does, the secret lands there, inside the rootfs.
		{name: "/run absolute symlink to a path the image also has", image: []string{"dir $HOST", "symlink run $HOST"}},
		{name: "/run relative symlink climbing out to a path the image also has", image: []string{"dir $HOST", "symlink run ../../../../../../../../$HOST"}},
		{name: "/run/northstar absolute symlink to a path the image also has", image: []string{"dir $HOST", "dir run", "symlink run/northstar $HOST"}},
		{name: "/var/run style symlink inside the image", image: []string{"dir var/run", "symlink run var/run"}},
		{name: "pre-existing secret symlink to host file", image: []string{"dir run/northstar", "symlink run/northstar/secret $HOST/victim"}},
		{name: "/run magic link to /proc/self/root", image: []string{"proc proc", "symlink run /proc/self/root$HOST"}, wantErr: true},
		{name: "/run/northstar magic link to /proc/1/cwd", image: []string{"proc proc", "dir run", "symlink run/northstar /proc/1/cwd"}, wantErr: true},
		{name: "/run/northstar magic link via /proc/self/fd", image: []string{"proc proc", "dir run", "symlink run/northstar /proc/self/fd/0"}, wantErr: true},
		{name: "/run/northstar is a regular file", image: []string{"dir run", "file run/northstar"}, wantErr: true},
		{name: "/run is a regular file", image: []string{"file run"}, wantErr: true},
		{name: "/run symlink loop", image: []string{"symlink run run"}, wantErr: true},
		{name: "/run/northstar points at the rootfs root", image: []string{"dir run", "symlink run/northstar ../.."}, wantErr: true},
		// The container's mount tree holds more than the image: only its
		// root filesystem and a tmpfs exactly at /run may take the secret.
		{name: "/run symlink to a host volume bind-mounted into the container", image: []string{"bind vol $HOST", "symlink run /vol"}, wantErr: true, refused: true},
		{name: "/run/northstar dangling symlink into a host volume", image: []string{"bind vol $HOST", "dir run", "symlink run/northstar /vol/northstar"}, wantErr: true},
		{name: "/run/northstar symlink to a host volume", image: []string{"bind vol $HOST", "dir run", "symlink run/northstar /vol"}, wantErr: true, refused: true},
		{name: "/run/northstar symlink to /proc", image: []string{"mount proc proc", "dir run", "symlink run/northstar /proc"}, wantErr: true, refused: true},
		{name: "/run/northstar symlink to /proc/sys", image: []string{"mount proc proc", "dir run", "symlink run/northstar /proc/sys"}, wantErr: true, refused: true},
		{name: "/run/northstar symlink to /sys", image: []string{"mount sysfs sys", "dir run", "symlink run/northstar /sys"}, wantErr: true, refused: true},
		{name: "/run/northstar symlink to /dev (devtmpfs)", image: []string{"mount devtmpfs dev", "dir run", "symlink run/northstar /dev"}, wantErr: true, refused: true},
		{name: "/run symlink to a tmpfs elsewhere", image: []string{"mount tmpfs srv", "symlink run /srv"}, wantErr: true, refused: true},
		{name: "tmpfs at /run (containerd's default spec)", image: []string{"mount tmpfs run"}},
		{name: "tmpfs at /run that is shared", image: []string{"mount tmpfs run", "shared run"}, wantErr: true, refused: true},
	}
	memfd, err := secretfs.NewSealedMemfd("test", []byte(strings.Repeat("ab", 32)))
	if err != nil {
		t.Fatal(err)
	}
	defer memfd.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			rootfs, host := filepath.Join(tmp, "rootfs"), filepath.Join(tmp, "host")
			if err := os.MkdirAll(rootfs, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(host, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(host, "victim"), []byte("host file"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := testtree.Snapshot(host)
			err := inPrivateMountNS(func() error {
				if err := testtree.Build(rootfs, host, tt.image); err != nil {
					return fmt.Errorf("build image: %w", err)
				}
				m, err := New(memfd, Owner{UID: 1000, GID: 1000, Mode: 0o400})
				if err != nil {
					return fmt.Errorf("NewMount: %w", err)
				}
				defer m.Close()
				id, err := detachedMountID(m)
				if err != nil {
					return err
				}
				attachErr := m.AttachInRoot(rootfs, "/run/northstar", nil)
				if tt.wantErr {
					if attachErr == nil {
						return errors.New("attach succeeded, want an error")
					}
					t.Logf("refused as expected: %v", attachErr)
					if tt.refused && !errors.Is(attachErr, ErrTargetRefused) {
						return fmt.Errorf("refused with %v, want ErrTargetRefused", attachErr)
					}
					if mp, err := mountPointOf(id); err == nil {
						return fmt.Errorf("refused attach left a mount at %s", mp)
					}
					return nil
				}
				if attachErr != nil {
					return fmt.Errorf("attach: %w", attachErr)
				}
				mp, err := mountPointOf(id)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(mp, rootfs+"/") {
					return fmt.Errorf("mounted at %s, outside the rootfs %s", mp, rootfs)
				}
				// What the container will see: /run/northstar/secret resolved
				// inside its root.
				h, err := pathrs.OpenInRoot(rootfs, "/run/northstar/secret")
				if err != nil {
					return fmt.Errorf("secret not visible in the container: %w", err)
				}
				defer h.Close()
				f, err := pathrs.Reopen(h, unix.O_RDONLY)
				if err != nil {
					return err
				}
				defer f.Close()
				got, _ := io.ReadAll(f)
				if string(got) != strings.Repeat("ab", 32) {
					return fmt.Errorf("secret file holds %q", got)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if after := testtree.Snapshot(host); after != before {
				t.Errorf("host directory changed:\nbefore:\n%safter:\n%s", before, after)
			}
		})
	}
}

func TestNewMountAttributes(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces and real mounts")
	memfd, err := secretfs.NewSealedMemfd("test", []byte(strings.Repeat("cd", 32)))
	if err != nil {
		t.Fatal(err)
	}
	defer memfd.Close()
	err = inPrivateMountNS(func() error {
		m, err := New(memfd, Owner{UID: 1000, GID: 2000, Mode: 0o440})
		if err != nil {
			return err
		}
		defer m.Close()
		if m.FSType != "tmpfs" {
			return fmt.Errorf("filesystem %q, want tmpfs with noswap on this kernel", m.FSType)
		}
		dir := t.TempDir()
		if err := m.AttachInRoot(dir, "/run/northstar", nil); err != nil {
			return err
		}
		target := filepath.Join(dir, "run/northstar")
		var sfs unix.Statfs_t
		if err := unix.Statfs(target, &sfs); err != nil {
			return err
		}
		want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC | stNoSymFollow)
		if sfs.Flags&want != want {
			return fmt.Errorf("mount flags %#x, want %#x set", sfs.Flags, want)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(target, secretfs.File), &st); err != nil {
			return err
		}
		if st.Uid != 1000 || st.Gid != 2000 || st.Mode&0o7777 != 0o440 || st.Size != 64 {
			return fmt.Errorf("secret file %d:%d mode %o size %d, want 1000:2000 0440 64", st.Uid, st.Gid, st.Mode&0o7777, st.Size)
		}
		// Root cannot write or create anything there.
		if err := os.WriteFile(filepath.Join(target, secretfs.File), []byte("x"), 0o400); !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("write secret: err = %v, want EROFS", err)
		}
		if err := os.WriteFile(filepath.Join(target, "new"), []byte("x"), 0o400); !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("create file: err = %v, want EROFS", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewMountRejectsWritableMode(t *testing.T) {
	memfd, err := secretfs.NewSealedMemfd("test", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer memfd.Close()
	for _, mode := range []os.FileMode{0, 0o600, 0o444 | 0o100, 0o4400} {
		if _, err := New(memfd, Owner{Mode: mode}); err == nil {
			t.Errorf("mode %#o accepted", mode)
		}
	}
}

func TestNewRefusesUnsealedSource(t *testing.T) {
	tmp, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	if _, err := tmp.WriteString(strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(tmp, Owner{Mode: 0o400}); !errors.Is(err, secretfs.ErrNotSealed) {
		t.Errorf("New from an unsealed file: err = %v, want ErrNotSealed", err)
	}
}

// stNoSymFollow is ST_NOSYMFOLLOW from <sys/statvfs.h> (not in x/sys/unix).
const stNoSymFollow = 0x2000

// TestNewAPIOnly: the filesystem of a container out of the shared secret
// holds the API directory and no secret, read-only like the other.
func TestNewAPIOnly(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces and real mounts")
	err := inPrivateMountNS(func() error {
		m, err := NewAPIOnly()
		if err != nil {
			return err
		}
		defer m.Close()
		dir := t.TempDir()
		if err := m.AttachInRoot(dir, "/run/northstar", nil); err != nil {
			return err
		}
		target := filepath.Join(dir, "run/northstar")
		ents, err := os.ReadDir(target)
		if err != nil {
			return err
		}
		if len(ents) != 1 || ents[0].Name() != APIDir || !ents[0].IsDir() {
			return fmt.Errorf("entries %v, want the %s directory alone", ents, APIDir)
		}
		var sfs unix.Statfs_t
		if err := unix.Statfs(target, &sfs); err != nil {
			return err
		}
		if want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC); sfs.Flags&want != want {
			return fmt.Errorf("mount flags %#x, want %#x set", sfs.Flags, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMountLookupsAgree holds statmount(2) and the mountinfo fallback to
// the same answer for the mounts the target check meets: the root, a
// tmpfs, procfs, and a shared mount.
func TestMountLookupsAgree(t *testing.T) {
	testenv.RequireRoot(t, "mount namespaces and real mounts")
	if !statmountIDs() {
		t.Skip("no statmount(2) on this kernel: only the fallback runs")
	}
	dir := t.TempDir()
	err := inPrivateMountNS(func() error {
		tmp, shared := filepath.Join(dir, "tmp"), filepath.Join(dir, "shared")
		for _, d := range []string{tmp, shared} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
			if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return err
			}
		}
		if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
			return err
		}
		for _, p := range []string{"/", "/proc", tmp, shared} {
			f, err := os.OpenFile(p, unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			uid, err := mountIDs(true).of(f)
			if err != nil {
				return err
			}
			oid, err := mountIDs(false).of(f)
			f.Close()
			if err != nil {
				return err
			}
			a, err := mountIDs(true).lookup(uid)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			b, err := mountIDs(false).lookup(oid)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if *a != *b {
				return fmt.Errorf("%s: statmount says %+v, mountinfo %+v", p, *a, *b)
			}
			if p == shared && !a.shared {
				return fmt.Errorf("%s: not seen as shared", p)
			}
			if p == tmp && a.attr != attrBits {
				return fmt.Errorf("%s: attributes %#x, want ro, nosuid, nodev, noexec", p, a.attr)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
