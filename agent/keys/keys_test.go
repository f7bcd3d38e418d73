// SPDX-License-Identifier: Apache-2.0

package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"testing"
)

func testRoot(t *testing.T) *Root {
	t.Helper()
	r, err := NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDeterministicPerIdentityAndGeneration(t *testing.T) {
	r := testRoot(t)
	again, _ := RootFromBytes(r.b)
	if !bytes.Equal(r.Ed25519("client", 7), again.Ed25519("client", 7)) {
		t.Error("the same root, identity and generation gave two signing keys")
	}
	seen := map[string]string{}
	for _, c := range []struct {
		id  string
		gen uint64
	}{{"client", 7}, {"server", 7}, {"client", 8}, {"clien", 7}, {"client\x00", 7}} {
		k := string(r.Ed25519(c.id, c.gen).Seed())
		if prev, dup := seen[k]; dup {
			t.Errorf("%q/%d shares its signing key with %s", c.id, c.gen, prev)
		}
		seen[k] = fmt.Sprintf("%q/%d", c.id, c.gen)
	}
	other := testRoot(t)
	if bytes.Equal(r.Ed25519("client", 7), other.Ed25519("client", 7)) {
		t.Error("two roots gave the same key")
	}
	// Purposes are separate domains.
	x := r.X25519("client", 7).Bytes()
	if bytes.Equal(x, r.Ed25519("client", 7).Seed()) || bytes.Equal(x, r.TokenKey(7)) {
		t.Error("two purposes share key material")
	}
}

func TestSignatures(t *testing.T) {
	r := testRoot(t)
	msg := []byte("hello")
	sig := ed25519.Sign(r.Ed25519("client", 1), msg)
	if !ed25519.Verify(r.Ed25519("client", 1).Public().(ed25519.PublicKey), msg, sig) {
		t.Fatal("signature does not verify under the signer's key")
	}
	if ed25519.Verify(r.Ed25519("mallory", 1).Public().(ed25519.PublicKey), msg, sig) {
		t.Error("signature verifies under another identity's key")
	}
}

func TestPairwise(t *testing.T) {
	r := testRoot(t)
	ab, err := r.Pairwise("client", "server", "mqtt", 3)
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := r.Pairwise("server", "client", "mqtt", 3)
	if !bytes.Equal(ab, ba) || len(ab) != 32 {
		t.Fatalf("A->B %x and B->A %x differ", ab, ba)
	}
	for name, c := range map[string][3]string{
		"another app":  {"client", "server", "http"},
		"another peer": {"client", "db", "mqtt"},
		"another self": {"mallory", "server", "mqtt"},
	} {
		k, _ := r.Pairwise(c[0], c[1], c[2], 3)
		if bytes.Equal(k, ab) {
			t.Errorf("%s: same key", name)
		}
	}
	if k, _ := r.Pairwise("client", "server", "mqtt", 4); bytes.Equal(k, ab) {
		t.Error("another generation: same key")
	}
	if _, err := r.Pairwise("client", "client", "mqtt", 3); err == nil {
		t.Error("a pairwise key with oneself")
	}
}

func TestRootNeverPrints(t *testing.T) {
	r := testRoot(t)
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s", r, r, r, r)} {
		if bytes.Contains([]byte(s), r.b[:4]) || !bytes.Contains([]byte(s), []byte("redacted")) {
			t.Errorf("printed %q", s)
		}
	}
	if _, err := json.Marshal(r); err == nil {
		t.Error("the root key marshals to JSON")
	}
	if _, err := RootFromBytes(make([]byte, 31)); err == nil {
		t.Error("a 31-byte root accepted")
	}
}
