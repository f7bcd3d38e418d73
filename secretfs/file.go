// SPDX-License-Identifier: Apache-2.0

package secretfs

import (
	"fmt"
	"os"
	"strconv"
)

// Dir is where the secret appears inside every container. It is part of the
// contract (DESIGN.md §3) and deliberately not configurable: a configurable
// in-container target would also be a configurable attack surface.
const Dir = "/run/northstar"

// APIDir is where the agent's API directory appears inside a container
// (package mount's APIDir, inside Dir).
const APIDir = Dir + "/api"

// BindOptions are the options of the bind mounts of Dir and APIDir a
// runtime is handed instead of the hook (NRI, the shim; DESIGN.md §19):
// read-only, nosuid, nodev, noexec, never propagating. A new slice each
// call: the runtimes' mount structures keep it.
func BindOptions() []string {
	return []string{"bind", "ro", "nosuid", "nodev", "noexec", "rprivate"}
}

// File is the name of the secret inside Dir.
const File = "secret"

// PreviousFile is the secret of the generation before, inside Dir, after a
// live rotation, for [rotation] grace (DESIGN.md §12).
const PreviousFile = "secret.previous"

// DefaultMode is the secret file's mode unless the config or an annotation
// says otherwise.
const DefaultMode os.FileMode = 0o400

// CheckMode enforces the one rule for the secret file's mode: read bits only,
// at least one of them. The file lives on a read-only mount and must never be
// writable or executable, nor carry setuid/setgid/sticky bits.
func CheckMode(m os.FileMode) error {
	if m&^0o444 != 0 {
		return fmt.Errorf("%#o has bits other than read (at most 0444)", m)
	}
	if m == 0 {
		return fmt.Errorf("%#o grants no read access", m)
	}
	return nil
}

// ParseMode parses an octal mode for the secret file ("0440") and checks it
// with CheckMode. The config's [secret] mode and the io.northstar.secret.mode
// annotation both go through it.
func ParseMode(s string) (os.FileMode, error) {
	if s == "" || len(s) > 4 {
		return 0, fmt.Errorf("%q is not an octal mode like 0400", s)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an octal mode like 0400", s)
	}
	if err := CheckMode(os.FileMode(v)); err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return os.FileMode(v), nil
}
