// SPDX-License-Identifier: Apache-2.0

package shimstart

import (
	"errors"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	r := Request{Config: "/etc/northstar/config.toml", Bundle: "/run/containerd/io.containerd.runtime.v2.task/default/c1", ID: "c1", Parent: 4242}
	b := r.Encode()
	if b[0] != Op {
		t.Fatalf("op %q", b[0])
	}
	got, err := Decode(b[1:])
	if err != nil || got != r {
		t.Fatalf("Decode(Encode(r)) = %+v, %v; want %+v", got, err, r)
	}
}

// TestDecodeRefuses: what the agent would act on must be whole and sane.
func TestDecodeRefuses(t *testing.T) {
	for _, body := range []string{
		"",
		"/c\x00/b\x00id\x0042",          // no final NUL
		"/c\x00/b\x00id\x0042\x00extra", // a field too many
		"/c\x00/b\x00id\x00x\x00",       // pid not a number
		"/c\x00/b\x00id\x000\x00",       // pid 0
		"c\x00/b\x00id\x001\x00",        // relative config
		"/c\x00b\x00id\x001\x00",        // relative bundle
		"/c\x00/b/../x\x00id\x001\x00",  // unclean bundle
		"/c\x00/b\x00\x001\x00",         // no id
	} {
		if r, err := Decode([]byte(body)); err == nil {
			t.Errorf("Decode(%q) = %+v, want an error", body, r)
		}
	}
}

func TestAnswer(t *testing.T) {
	for _, c := range []struct {
		delegate string
		served   bool
		err      error
		want     string
	}{
		{"/usr/bin/containerd-shim-runc-v2", true, nil, "y/usr/bin/containerd-shim-runc-v2"},
		{"", false, nil, "n"},
		{"", false, errors.New("another config"), "nanother config"},
		{"", true, errors.New("container c1 is revoked"), "econtainer c1 is revoked"},
	} {
		if got := string(Answer(c.delegate, c.served, c.err)); got != c.want {
			t.Errorf("Answer(%q, %v, %v) = %q, want %q", c.delegate, c.served, c.err, got, c.want)
		}
	}
}
