// SPDX-License-Identifier: Apache-2.0

package secretfs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// requiredSeals are the seals a secret memfd must carry: its content can
// never change again and no further seals (or unseals) can be added.
const requiredSeals = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// maxMemfdSize bounds what ReadMemfd accepts from a memfd it did not create.
const maxMemfdSize = 4 << 10

// ErrNotSealed: a memfd lacks the seals that make its content immutable.
var ErrNotSealed = errors.New("memfd is not sealed against writes")

// NewSealedMemfd returns a memfd holding content, sealed so that nobody (not
// even its creator) can modify, grow, shrink or re-seal it. It is the
// runtime-side carrier of the unsealed secret: anonymous, never on disk, and
// safe to hand to another process because the receiver can verify the seals.
//
// A memfd cannot be bind-mounted into a container (the kernel returns EINVAL
// for bind mounts and open_tree of shm-internal files), so the container sees
// a copy on a tiny tmpfs instead; see package secretfs/mount.
func NewSealedMemfd(name string, content []byte) (*os.File, error) {
	// MFD_NOEXEC_SEAL (6.3+) also seals the exec bits off.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := writeAllAt(f, content); err != nil {
		f.Close()
		return nil, fmt.Errorf("write memfd: %w", err)
	}
	seals := requiredSeals | unix.F_SEAL_EXEC
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); errors.Is(err, unix.EINVAL) {
		// Kernels before 6.3 do not know F_SEAL_EXEC.
		_, err = unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, requiredSeals)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("seal memfd: %w", err)
		}
	} else if err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	return f, nil
}

// NewSecretMemfd is NewSealedMemfd holding sec in its in-container form (64
// lowercase hex). It zeroes sec and the temporary text, whatever happens.
func NewSecretMemfd(name string, sec *Secret) (*os.File, error) {
	text := sec.AppendHex(make([]byte, 0, HexSize))
	sec.Zero()
	defer Zero(text)
	return NewSealedMemfd(name, text)
}

func writeAllAt(f *os.File, b []byte) error {
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(int(f.Fd()), b[off:], int64(off))
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		off += n
	}
	return nil
}

// CheckSealed returns ErrNotSealed unless f is a memfd carrying the seals of
// NewSealedMemfd. Use it on every memfd received from another process.
func CheckSealed(f *os.File) error {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: not a memfd with sealing", ErrNotSealed)
		}
		return fmt.Errorf("get seals: %w", err)
	}
	if seals&requiredSeals != requiredSeals {
		return fmt.Errorf("%w: seals %#x, want %#x", ErrNotSealed, seals, requiredSeals)
	}
	return nil
}

// ReadMemfd checks the seals of f and returns its content.
func ReadMemfd(f *os.File) ([]byte, error) {
	if err := CheckSealed(f); err != nil {
		return nil, err
	}
	buf := make([]byte, maxMemfdSize+1)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		clear(buf)
		return nil, fmt.Errorf("read memfd: %w", err)
	}
	if n > maxMemfdSize {
		clear(buf)
		return nil, fmt.Errorf("memfd holds more than %d bytes", maxMemfdSize)
	}
	return buf[:n], nil
}
