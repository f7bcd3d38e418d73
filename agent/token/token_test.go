// SPDX-License-Identifier: Apache-2.0

package token

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/replay"
)

var (
	key7 = bytes.Repeat([]byte{7}, 32)
	key8 = bytes.Repeat([]byte{8}, 32)
	t0   = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
)

func verifier(now *time.Time, keys map[uint64][]byte) *Verifier {
	clock := func() time.Time { return *now }
	mem := replay.New(replay.Limits{})
	mem.Now = clock
	return &Verifier{Key: func(g uint64) []byte { return keys[g] }, Memory: mem, Now: clock}
}

func mint(t *testing.T, sender, audience, app string, gen uint64, key []byte, ttl time.Duration) string {
	t.Helper()
	tok, err := Mint(&Claims{Sender: sender, Audience: audience, App: app, Generation: gen, Expiry: t0.Add(ttl)}, key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerify(t *testing.T) {
	now := t0
	v := verifier(&now, map[uint64][]byte{7: key7, 8: key8})
	tok := mint(t, "client", "server", "mqtt", 7, key7, time.Minute)
	if len(tok) > MaxLen || strings.ContainsAny(tok, "+/=") {
		t.Fatalf("token %q is not short URL-safe base64", tok)
	}
	for _, c := range []struct {
		name                  string
		tok, aud, sender, app string
		want                  Reason
	}{
		{"another audience verifies", tok, "mallory", "client", "mqtt", WrongAudience},
		{"claimed by another sender", tok, "server", "mallory", "mqtt", WrongSender},
		{"for another app", tok, "server", "client", "http", WrongApp},
		{"valid", tok, "server", "client", "mqtt", ""},
		{"replayed", tok, "server", "client", "mqtt", Replayed},
		{"a token from mallory never passes as client's", mint(t, "mallory", "server", "mqtt", 7, key7, time.Minute), "server", "client", "mqtt", WrongSender},
		{"signed with another key", mint(t, "client", "server", "mqtt", 7, key8, time.Minute), "server", "client", "mqtt", BadSignature},
		{"unknown generation", mint(t, "client", "server", "mqtt", 9, key7, time.Minute), "server", "client", "mqtt", BadSignature},
		{"garbage", "hello", "server", "client", "mqtt", Malformed},
		{"empty", "", "server", "client", "mqtt", Malformed},
	} {
		_, got, err := v.Verify(c.tok, c.aud, c.sender, c.app)
		if err != nil || got != c.want {
			t.Errorf("%s: reason %q, %v; want %q", c.name, got, err, c.want)
		}
	}

	// A token minted before a rotation verifies until it expires.
	old := mint(t, "client", "server", "mqtt", 7, key7, time.Minute)
	if _, r, _ := v.Verify(old, "server", "client", "mqtt"); r != "" {
		t.Errorf("previous generation's token: %q", r)
	}
	exp := mint(t, "client", "server", "mqtt", 8, key8, time.Minute)
	now = t0.Add(time.Minute)
	if _, r, _ := v.Verify(exp, "server", "client", "mqtt"); r != Expired {
		t.Errorf("expired token: %q", r)
	}
}

func TestTamperedTokensFail(t *testing.T) {
	now := t0
	v := verifier(&now, map[uint64][]byte{7: key7})
	raw, _ := base64.RawURLEncoding.DecodeString(mint(t, "client", "server", "mqtt", 7, key7, time.Hour))
	for i := range raw {
		c := bytes.Clone(raw)
		c[i] ^= 1
		if _, r, _ := v.Verify(base64.RawURLEncoding.EncodeToString(c), "server", "client", "mqtt"); r == "" {
			t.Fatalf("flipping byte %d left a valid token", i)
		}
	}
}

func TestReplayCacheIsBounded(t *testing.T) {
	now := t0
	v := verifier(&now, map[uint64][]byte{7: key7})
	mem := replay.New(replay.Limits{PerAudience: 2, PerSender: 2})
	mem.Now = v.Now
	v.Memory = mem
	for i := 0; i < 2; i++ {
		if _, r, err := v.Verify(mint(t, "c", "b", "a", 7, key7, time.Minute), "b", "c", "a"); r != "" || err != nil {
			t.Fatal(r, err)
		}
	}
	var full *replay.FullError
	if _, _, err := v.Verify(mint(t, "c", "b", "a", 7, key7, time.Minute), "b", "c", "a"); !errors.As(err, &full) {
		t.Errorf("full memory: %v, want a replay.FullError (never forget an unexpired nonce)", err)
	}
	now = t0.Add(time.Minute) // the remembered ones expired
	if _, r, err := v.Verify(mint(t, "c", "b", "a", 7, key7, 2*time.Minute), "b", "c", "a"); r != "" || err != nil {
		t.Errorf("after expiry: %q %v", r, err)
	}
}

func TestMintLimits(t *testing.T) {
	for name, c := range map[string]Claims{
		"empty sender":  {Audience: "b", App: "a"},
		"long audience": {Sender: "s", Audience: strings.Repeat("b", MaxIdentity+1), App: "a"},
		"long app":      {Sender: "s", Audience: "b", App: strings.Repeat("a", MaxApp+1)},
		"too long":      {Sender: strings.Repeat("s", 200), Audience: strings.Repeat("b", 200), App: "a"},
	} {
		if _, err := Mint(&c, key7); err == nil {
			t.Errorf("%s: minted", name)
		}
	}
	c := Claims{Sender: "client", Audience: "server", App: "mqtt", Expiry: t0}
	tok, _ := Mint(&c, key7)
	if strings.Contains(tok, c.ID()) || len(c.ID()) != 16 {
		t.Errorf("token id %q", c.ID())
	}
}

func FuzzParse(f *testing.F) {
	f.Add("")
	f.Add("AQZjbGllbnQGYnJva2VyBG1xdHQAAAAAaSnnoAAAAAAAAAAH")
	c := Claims{Sender: "client", Audience: "server", App: "mqtt", Expiry: t0, Generation: 7}
	tok, _ := Mint(&c, key7)
	f.Add(tok)
	f.Fuzz(func(t *testing.T, tok string) {
		c, body, sum, err := Parse(tok)
		if err != nil {
			return
		}
		if c.Sender == "" || c.Audience == "" || c.App == "" || len(sum) != 32 {
			t.Fatalf("accepted empty fields: %+v", c)
		}
		// What parses re-encodes to the same body.
		if !bytes.Equal(c.marshal(), body) {
			t.Fatalf("body does not round-trip")
		}
	})
}

// TestUnrecordedUseIsNotValid: when the memory cannot record a use (a
// full disk), the token is not answered valid, and stays unused.
func TestUnrecordedUseIsNotValid(t *testing.T) {
	now := t0
	v := verifier(&now, map[uint64][]byte{7: key7})
	ok := v.Memory
	v.Memory = failingMemory{}
	tok := mint(t, "client", "server", "mqtt", 7, key7, time.Minute)
	if _, r, err := v.Verify(tok, "server", "client", "mqtt"); err == nil || r != "" {
		t.Fatalf("an unrecorded use: reason %q, error %v; want no reason and an error", r, err)
	}
	v.Memory = ok
	if _, r, err := v.Verify(tok, "server", "client", "mqtt"); err != nil || r != "" {
		t.Errorf("the same token once the memory records: %q %v, want valid", r, err)
	}
}

type failingMemory struct{}

func (failingMemory) Use(string, string, [NonceSize]byte, time.Time) error {
	return errors.New("no space left on device")
}
