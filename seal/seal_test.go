// SPDX-License-Identifier: Apache-2.0

package seal

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPCRs(t *testing.T) {
	for _, ok := range [][]int{nil, {}, {0}, {7, 16}, {23, 0}} {
		if err := CheckPCRs(ok); err != nil {
			t.Errorf("CheckPCRs(%v) = %v", ok, err)
		}
	}
	for in, want := range map[string][]int{"out of range 0-23": {24}, "PCR -1 out of range": {-1}, "listed twice": {7, 7}} {
		if err := CheckPCRs(want); err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("CheckPCRs(%v) = %v, want %q", want, err, in)
		}
	}
	if got := FormatPCRs(nil); got != "none" {
		t.Errorf("FormatPCRs(nil) = %q", got)
	}
	if got := FormatPCRs([]int{7, 16}); got != "7,16" {
		t.Errorf("FormatPCRs = %q", got)
	}
}

func TestDescribe(t *testing.T) {
	ctx := context.Background()
	host := NewHost(filepath.Join(t.TempDir(), HostKeyFile))
	hostBlob, err := host.Seal(ctx, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Describe(hostBlob)
	if err != nil || d.Kind != KindHost || !strings.Contains(d.Protection, "no TPM protection") || d.PCRs != nil {
		t.Errorf("Describe(host blob) = %+v, %v", d, err)
	}

	// A real TPM blob is described in tpmseal's tests; the shape is all
	// Describe reads.
	tpmBlob := syntheticBlob(7, 16).Encode()
	d, err = Describe(tpmBlob)
	if err != nil || d.Kind != KindTPM || FormatPCRs(d.PCRs) != "7,16" || len(d.SRKName) != SRKNameSize {
		t.Fatalf("Describe(TPM blob) = %+v, %v", d, err)
	}
	if !strings.Contains(d.Protection, "TPM 2.0 sealed") || !strings.Contains(d.Protection, "PCRs 7,16") {
		t.Errorf("protection %q", d.Protection)
	}

	for name, tt := range map[string]struct {
		blob []byte
		want error
	}{
		"empty":             {nil, ErrCorrupt},
		"unknown magic":     {[]byte("XYZ\x01abc"), ErrCorrupt},
		"future host blob":  {append([]byte("NSH\x02"), hostBlob[4:]...), ErrUnknownVersion},
		"future TPM blob":   {append([]byte("NST\x03"), tpmBlob[4:]...), ErrUnknownVersion},
		"truncated TPM":     {tpmBlob[:len(tpmBlob)/2], ErrCorrupt},
		"magic only (host)": {[]byte("NSH"), ErrCorrupt},
	} {
		if d, err := Describe(tt.blob); !errors.Is(err, tt.want) {
			t.Errorf("%s: Describe = %+v, %v; want %v", name, d, err, tt.want)
		}
	}
}
