// SPDX-License-Identifier: Apache-2.0

//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/seal/tpmconn"
	"github.com/northstar-oci/northstar/seal/tpmseal"
)

// tpmDevice is what a config's [tpm] path can name in these tests: swtpm
// itself, or a proxy in front of it.
type tpmDevice interface{ path() string }

var (
	_ tpmDevice = (*swtpm)(nil)
	_ tpmDevice = (*tpmProxy)(nil)
)

// tpmProxy is a TPM as slow as a discrete one: it listens on a unix socket
// of its own, forwards every command to swtpm's data channel and holds
// every response for delay before passing it on. A discrete TPM takes
// 20-200 ms a command where swtpm takes about 1 ms, so this is the TPM
// users have, not the one the other tests run against.
//
// The TPM wire protocol is command/response, one at a time per connection:
// a 10-byte header (tag u16, size u32, code u32, big-endian; size counts
// the whole message) and the rest of the message. Each client connection
// gets a connection of its own to swtpm, opened at its first command and
// closed with it, so the lock file northstar takes around a conversation
// still serialises swtpm's one-connection-at-a-time service.
type tpmProxy struct {
	sock     string
	upstream string // swtpm's data socket
	delay    time.Duration
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool // guarded by mu: open client connections
	commands atomic.Int64      // commands forwarded
	delayed  atomic.Int64      // responses held for delay, then passed on
}

// path is the [tpm] path of the config.
func (p *tpmProxy) path() string { return "unix:" + p.sock }

// newTPMProxy starts a proxy in front of s that holds each response for
// delay. Its socket is owned, mode 0600, by the owner of swtpm's
// directory, as swtpm's own socket is: a rootless runtime's hook reaches
// it as it reaches swtpm. Cleanup stops it.
func newTPMProxy(t *testing.T, s *swtpm, delay time.Duration) *tpmProxy {
	t.Helper()
	p := &tpmProxy{sock: filepath.Join(s.dir, "slow.sock"), upstream: s.sock, delay: delay, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("unix", p.sock)
	if err != nil {
		t.Fatalf("tpm proxy: %v", err)
	}
	var dir syscall.Stat_t
	if err := syscall.Stat(s.dir, &dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p.sock, int(dir.Uid), int(dir.Gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.sock, 0o600); err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tpmProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = true
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_ = p.forward(c)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
			c.Close()
		}()
	}
}

// forward relays client's conversation until either side closes.
func (p *tpmProxy) forward(client net.Conn) error {
	var up net.Conn
	defer func() {
		if up != nil {
			up.Close()
		}
	}()
	for {
		cmd, err := tpmconn.ReadMessage(client)
		if err != nil {
			return err
		}
		if up == nil {
			if up, err = dialSWTPM(p.upstream); err != nil {
				return err
			}
		}
		p.commands.Add(1)
		if _, err := up.Write(cmd); err != nil {
			return err
		}
		rsp, err := tpmconn.ReadMessage(up)
		if err != nil {
			return err
		}
		time.Sleep(p.delay)
		p.delayed.Add(1)
		if _, err := client.Write(rsp); err != nil {
			return err
		}
	}
}

// dialSWTPM connects to swtpm, which accepts one connection at a time: a
// connection of the previous conversation may not be closed yet.
func dialSWTPM(sock string) (net.Conn, error) {
	for try := 0; ; try++ {
		c, err := net.Dial("unix", sock)
		if err == nil || try == 50 || !(errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ECONNREFUSED)) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// close stops listening, ends the conversations in flight and waits for
// them.
func (p *tpmProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestTPMProxy: a real conversation through the proxy: a TPM sealer on the
// proxy's socket seals and unseals a secret with swtpm behind it, reads
// the SRK swtpm reports without it, and every command's response went
// back through the delay.
func TestTPMProxy(t *testing.T) {
	requires(t, "swtpm")
	s := newSWTPM(t, nil)
	p := newTPMProxy(t, s, 5*time.Millisecond)
	ctx := context.Background()
	lock := filepath.Join(t.TempDir(), "tpm.lock")
	viaProxy, err := tpmseal.New(tpmseal.Options{Path: p.path(), PCRs: []int{16}, LockPath: lock, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := tpmseal.New(tpmseal.Options{Path: s.path(), PCRs: []int{16}, LockPath: lock, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("a northstar lifecycle secret, 64 bytes of hex in real life......")
	blob, err := viaProxy.Seal(ctx, secret)
	if err != nil {
		t.Fatalf("seal through the proxy: %v", err)
	}
	for name, sealer := range map[string]*tpmseal.TPM{"through the proxy": viaProxy, "from swtpm directly": direct} {
		got, err := sealer.Unseal(ctx, blob)
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("unseal %s: %q, %v; want the sealed secret", name, got, err)
		}
	}
	nameViaProxy, err := viaProxy.SRKName(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nameDirect, err := direct.SRKName(ctx)
	if err != nil || !bytes.Equal(nameViaProxy, nameDirect) {
		t.Errorf("SRK name through the proxy %x, from swtpm %x (%v)", nameViaProxy, nameDirect, err)
	}
	if n, d := p.commands.Load(), p.delayed.Load(); n < 10 || d != n {
		t.Errorf("the proxy forwarded %d commands and delayed %d responses; want every one of a seal, an unseal and a ReadPublic", n, d)
	}
}

// TestTPMProxyRefusesOversizedMessage: a command claiming more than a TPM
// buffer ends the conversation instead of being read into memory.
func TestTPMProxyRefusesOversizedMessage(t *testing.T) {
	requires(t, "swtpm")
	p := newTPMProxy(t, newSWTPM(t, nil), 0)
	c, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := []byte{0x80, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x7b} // TPM_ST_NO_SESSIONS, size, TPM2_GetRandom
	binary.BigEndian.PutUint32(hdr[2:6], tpmconn.MaxMessage+1)
	if _, err := c.Write(hdr); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err != io.EOF {
		t.Errorf("after an oversized command the proxy answered %d bytes, %v; want the connection closed", n, err)
	}
	if p.commands.Load() != 0 {
		t.Errorf("the proxy forwarded an oversized command")
	}
}
