// SPDX-License-Identifier: Apache-2.0

package store

import (
	"context"
	"errors"
	"testing"
)

func TestForReadingReadsAndNeverUnseals(t *testing.T) {
	ctx := context.Background()
	s := newHostStore(t)
	rec, _, err := s.Init(ctx, "lifecycle-1")
	if err != nil {
		t.Fatal(err)
	}
	r := ForReading(s.Dir(), s.Sealer().Name())
	got, err := r.Current()
	if err != nil || got.Generation != rec.Generation || got.LifecycleID != "lifecycle-1" {
		t.Fatalf("Current = %+v, %v; want generation %d", got, err, rec.Generation)
	}
	if sec, _, err := r.Secret(ctx); !errors.Is(err, ErrReadOnly) || sec != nil {
		t.Errorf("Secret = %v, %v; want ErrReadOnly", sec, err)
	}
	if _, err := r.Rotate(ctx); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Rotate = %v; want ErrReadOnly", err)
	}
}
