// SPDX-License-Identifier: Apache-2.0

package store

import (
	"context"
	"errors"
)

// ForReading returns the store in dir for what only reads its record
// (Current, revocations, the lifecycle id) and must not link the sealers'
// code: the hook that the agent serves, the runtime wrappers. sealer is
// the kind the config names ("tpm", "host"), which a record is checked
// against as with the sealer itself (FetchCurrent). Anything that needs
// the sealer (Secret, a rotation) fails with ErrReadOnly.
func ForReading(dir, sealer string) *Store {
	return New(dir, readOnly{kind: sealer})
}

// ErrReadOnly is a store opened with ForReading asked to seal or unseal.
var ErrReadOnly = errors.New("this store only reads records (store.ForReading)")

// readOnly is the sealer of a store opened with ForReading.
type readOnly struct{ kind string }

func (r readOnly) Name() string { return r.kind }

func (readOnly) Seal(context.Context, []byte) ([]byte, error) { return nil, ErrReadOnly }

func (readOnly) Unseal(context.Context, []byte) ([]byte, error) { return nil, ErrReadOnly }
