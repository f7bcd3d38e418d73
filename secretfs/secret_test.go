// SPDX-License-Identifier: Apache-2.0

package secretfs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	s, err := NewRandom()
	if err != nil {
		t.Fatal(err)
	}
	h := string(s.AppendHex(nil))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		out := fmt.Sprintf(verb, s)
		if out == h || bytes.Contains([]byte(out), []byte(h[:16])) {
			t.Errorf("%s printed secret material: %q", verb, out)
		}
	}
	if _, err := json.Marshal(s); !errors.Is(err, ErrNotSerializable) {
		t.Errorf("json.Marshal: err = %v, want ErrNotSerializable", err)
	}
	if _, err := json.Marshal(struct{ S *Secret }{s}); err == nil {
		t.Error("json.Marshal of a struct holding a secret succeeded")
	}
}

func TestSecretHexRoundTrip(t *testing.T) {
	s, _ := NewRandom()
	h := s.AppendHex(nil)
	if len(h) != HexSize {
		t.Fatalf("hex is %d bytes", len(h))
	}
	back, err := FromHex(h)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(s) {
		t.Fatal("hex round trip changed the secret")
	}
	for _, bad := range []string{"", "00", string(bytes.ToUpper(h)), string(h[:63]) + "g", string(h) + "\n"} {
		if _, err := FromHex([]byte(bad)); err == nil {
			t.Errorf("FromHex(%q) accepted", bad)
		}
	}
	s.Zero()
	if !s.Equal(&Secret{}) {
		t.Error("Zero left secret bytes")
	}
}
