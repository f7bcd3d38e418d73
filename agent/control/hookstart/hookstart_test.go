// SPDX-License-Identifier: Apache-2.0

package hookstart

import (
	"bytes"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestRequestRoundTrip(t *testing.T) {
	r := Request{Config: "/etc/northstar/config.toml", Parent: 4242, State: []byte(`{"ociVersion":"1.0.2","id":"c1","pid":7,"bundle":"/b"}`)}
	b := r.Encode()
	if b[0] != Op {
		t.Fatalf("first byte %q, want %q", b[0], Op)
	}
	got, err := Decode(b[1:])
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != r.Config || got.Parent != r.Parent || !bytes.Equal(got.State, r.State) {
		t.Errorf("Decode(Encode(%+v)) = %+v", r, got)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"empty":             "",
		"no parent":         "/etc/c.toml",
		"no state":          "/etc/c.toml\x00",
		"parent not a pid":  "/etc/c.toml\x00x\x00{}",
		"parent zero":       "/etc/c.toml\x000\x00{}",
		"parent negative":   "/etc/c.toml\x00-1\x00{}",
		"relative config":   "c.toml\x001\x00{}",
		"config with a NUL": "/etc\x00c.toml\x001\x00{}",
	} {
		if r, err := Decode([]byte(body)); err == nil {
			t.Errorf("%s: Decode(%q) = %+v, want an error", name, body, r)
		}
	}
}

// The answer's three kinds, as Ask reads them (answer, without a socket).
func TestAnswer(t *testing.T) {
	for _, c := range []struct {
		served    bool
		err       error
		notServed bool
		msg       string
	}{
		{true, nil, false, ""},
		{false, errors.New("another config"), true, "not served by the agent: another config"},
		{true, errors.New("policy: bad annotation"), false, "policy: bad annotation"},
	} {
		err := answer("/s", Answer(c.served, c.err))
		switch {
		case c.msg == "" && err != nil:
			t.Errorf("Answer(%v, %v) read back as %v, want nil", c.served, c.err, err)
		case c.msg != "" && (err == nil || err.Error() != c.msg || errors.Is(err, ErrNotServed) != c.notServed):
			t.Errorf("Answer(%v, %v) read back as %v, want %q (not served: %v)", c.served, c.err, err, c.msg, c.notServed)
		}
	}
}

// TestAskNotServed: an agent that closes the connection without an
// answer, having read the request (an older agent) or not (a refused
// peer: the reader sees ECONNRESET), leaves the start to the hook; one
// that answers decides it.
func TestAskNotServed(t *testing.T) {
	for _, c := range []struct {
		name   string
		serve  func(c *net.UnixConn)
		served bool
	}{
		{"read and closed", func(c *net.UnixConn) { c.Read(make([]byte, MaxRequest+1)) }, false},
		{"closed unread", func(*net.UnixConn) {}, false},
		{"not served", func(c *net.UnixConn) {
			c.Read(make([]byte, MaxRequest+1))
			c.Write(Answer(false, errors.New("another config")))
		}, false},
		{"served", func(c *net.UnixConn) { c.Read(make([]byte, MaxRequest+1)); c.Write(Answer(true, nil)) }, true},
	} {
		sock := filepath.Join(t.TempDir(), "agent.sock")
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			c.serve(conn)
			conn.Close()
		}()
		err = Ask(sock, Request{Config: "/etc/northstar/config.toml", Parent: 1, State: []byte(`{}`)}, 5*time.Second)
		ln.Close()
		if served := err == nil; served != c.served || (!served && !errors.Is(err, ErrNotServed)) {
			t.Errorf("%s: Ask = %v, want served %v (else ErrNotServed)", c.name, err, c.served)
		}
	}
}
