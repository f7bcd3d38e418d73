// SPDX-License-Identifier: Apache-2.0

package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/northstar-oci/northstar/agent/measure"
	"github.com/northstar-oci/northstar/attest/containerlog"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

var sim struct {
	once sync.Once
	tpm  transport.TPMCloser
	err  error
}

type simTPM struct{ transport.TPM }

func (simTPM) Close() error { return nil }

func simOptions(t *testing.T) tpmconn.Options {
	t.Helper()
	sim.once.Do(func() { sim.tpm, sim.err = simulator.OpenSimulator() })
	if sim.err != nil {
		t.Fatalf("start TPM simulator: %v", sim.err)
	}
	return tpmconn.Options{Open: func() (transport.TPMCloser, error) { return simTPM{sim.tpm}, nil }}
}

// certified makes an attester with a container log of three deliveries
// and returns its certification over nonce and the AK's public area.
func certified(t *testing.T, index uint32, nonce []byte) (*Attester, *Containers, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tpm := simOptions(t)
	dir := t.TempDir()
	l, err := measure.Open(ctx, measure.Options{TPM: tpm, Index: index, Auth: bytes.Repeat([]byte{7}, measure.AuthSize),
		Path: filepath.Join(dir, measure.FileName), Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := l.Append(containerlog.Event{ID: fmt.Sprintf("c%d", i), Identity: "web", Via: "hook", Rootfs: "ext4 dev=8:1 ino=2"}); err != nil {
			t.Fatal(err)
		}
		if err := l.Wait(ctx); err != nil { // a batch each
			t.Fatal(err)
		}
	}
	l.Close()
	a, err := New(Options{TPM: tpm, Dir: filepath.Join(dir, "attest"), Containers: &ContainerLog{Path: filepath.Join(dir, measure.FileName), Index: index}})
	if err != nil {
		t.Fatal(err)
	}
	c, ak := certify(t, a, nonce)
	return a, c, ak
}

func certify(t *testing.T, a *Attester, nonce []byte) (*Containers, []byte) {
	t.Helper()
	_, ak, err := a.RootCertification(context.Background()) // makes the AK
	if err != nil {
		t.Fatal(err)
	}
	ev := &Evidence{Nonce: nonce}
	if err := a.withContainers(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	return ev.Containers, ak
}

func verifyWith(c *Containers, akPublic, nonce []byte) (*ContainerProof, error) {
	ak, err := goattest.ParseAKPublic(akPublic)
	if err != nil {
		return nil, err
	}
	return verifyContainers(c, ak, nonce)
}

// TestContainerLogCertified: the AK certifies the log's NV index
// (TPM2_NV_Certify) over the nonce; the log replays to the certified
// value and lists the deliveries; the index's attributes, read from the
// certification, let only its authValue's holder write it.
func TestContainerLogCertified(t *testing.T) {
	nonce := []byte("a verifier's nonce")
	index := containerlog.DefaultIndex + 0x200
	_, c, ak := certified(t, index, nonce)
	p, err := verifyWith(c, ak, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 3 || p.Events[2].ID != "c2" || p.Index != index {
		t.Fatalf("proof: %+v", p)
	}
	for _, a := range []string{"extend", "authwrite", "ownerread", "no_da", "written"} {
		if !strings.Contains(p.Attrs, a) {
			t.Errorf("certified attributes %s lack %s", p.Attrs, a)
		}
	}
	if strings.Contains(p.Attrs, "ownerwrite") || strings.Contains(p.Attrs, "policywrite") {
		t.Errorf("certified attributes %s", p.Attrs)
	}

	t.Run("wrong nonce", func(t *testing.T) {
		if _, err := verifyWith(c, ak, []byte("another verifier")); !errors.Is(err, ErrWrongNonce) {
			t.Fatalf("verify: %v", err)
		}
	})
	t.Run("another AK", func(t *testing.T) {
		_, _, other := certified(t, index+1, nonce)
		if _, err := verifyWith(c, other, nonce); !errors.Is(err, ErrNV) {
			t.Fatalf("verify: %v", err)
		}
	})
	t.Run("another index's public area", func(t *testing.T) {
		_, c2, _ := certified(t, index+2, nonce)
		bad := *c
		bad.NVPublic = c2.NVPublic
		if _, err := verifyWith(&bad, ak, nonce); !errors.Is(err, ErrNV) {
			t.Fatalf("verify: %v", err)
		}
	})
	for _, tc := range []struct {
		name   string
		tamper func([]containerlog.Record) []containerlog.Record
		want   string
	}{
		{"a dropped event", func(r []containerlog.Record) []containerlog.Record { return append(r[:1:1], r[2:]...) }, "record 1: numbered 2"},
		{"an edited event", func(r []containerlog.Record) []containerlog.Record {
			r[3].Content.Value = bytes.Replace(r[3].Content.Value, []byte("web"), []byte("db!"), 1)
			return r
		}, "record 3: its digest is not its content's"},
		{"reordered events", func(r []containerlog.Record) []containerlog.Record { r[1], r[2] = r[2], r[1]; return r }, "record 1: numbered 2"},
		{"the last batch dropped", func(r []containerlog.Record) []containerlog.Record {
			for i := len(r) - 1; i >= 0; i-- {
				if r[i].Content.Type == containerlog.ContentBatch {
					return r[:i]
				}
			}
			return r
		}, "after the last batch are not in the TPM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := containerlog.Parse(c.Log)
			if err != nil {
				t.Fatal(err)
			}
			bad := *c
			bad.Log = containerlog.Encode(tc.tamper(recs))
			_, err = verifyWith(&bad, ak, nonce)
			if !errors.Is(err, ErrLog) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v; want %q", err, tc.want)
			}
		})
	}
}

// TestIndexOthersMayWrite: an index the owner may also write, certified
// by the AK with a log that replays to it, is refused for its attributes.
func TestIndexOthersMayWrite(t *testing.T) {
	nonce := []byte("a verifier's nonce")
	index := containerlog.DefaultIndex + 0x210
	tpm := simOptions(t)
	dir := t.TempDir()
	first := containerlog.Batch(0, index, nil)
	if err := os.WriteFile(filepath.Join(dir, "log"), containerlog.Encode([]containerlog.Record{first}), 0o600); err != nil {
		t.Fatal(err)
	}
	err := tpmconn.Converse(context.Background(), tpm, func(tp transport.TPM) error {
		pub := containerlog.Public(index)
		pub.Attributes.OwnerWrite = true
		if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PublicInfo: tpm2.New2B(pub)}).Execute(tp); err != nil {
			return err
		}
		return measure.Extend(tp, index, nil, first.Digest[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{TPM: tpm, Dir: filepath.Join(dir, "attest"), Containers: &ContainerLog{Path: filepath.Join(dir, "log"), Index: index}})
	if err != nil {
		t.Fatal(err)
	}
	c, ak := certify(t, a, nonce)
	if _, err := verifyWith(c, ak, nonce); !errors.Is(err, ErrNVAttrs) || !strings.Contains(err.Error(), "ownerwrite true") {
		t.Fatalf("verify: %v", err)
	}
}

// TestContainerLogTail: a log longer than evidence carries is sent from a
// batch on, with the index's value before it, and verifies.
func TestContainerLogTail(t *testing.T) {
	defer func(b int) { containerLogBudget = b }(containerLogBudget)
	containerLogBudget = 200 // about one container record and its batch
	nonce := []byte("a verifier's nonce")
	_, c, ak := certified(t, containerlog.DefaultIndex+0x220, nonce)
	if len(c.From) == 0 {
		t.Fatal("the evidence carries the whole log")
	}
	p, err := verifyWith(c, ak, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if p.First == 0 || len(p.Events) == 0 || len(p.Events) == 3 || p.Events[len(p.Events)-1].ID != "c2" {
		t.Fatalf("a tail from record %d with %d events", p.First, len(p.Events))
	}
	bad := *c
	bad.From = make([]byte, 32)
	bad.From[0] = 1
	if _, err := verifyWith(&bad, ak, nonce); !errors.Is(err, ErrLog) {
		t.Fatalf("a tail from another value: %v", err)
	}
}
