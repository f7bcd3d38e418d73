// SPDX-License-Identifier: Apache-2.0

package tpmca

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/attest"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// The in-process reference TPM (one per process), behind a counter of
// the commands sent to it.
var sim struct {
	once  sync.Once
	tpm   transport.TPMCloser
	err   error
	sends atomic.Int64
}

type countingTPM struct{ transport.TPM }

func (c countingTPM) Send(cmd []byte) ([]byte, error) {
	sim.sends.Add(1)
	return c.TPM.Send(cmd)
}
func (countingTPM) Close() error { return nil }

func newAttester(t testing.TB, dir string) *attest.Attester {
	t.Helper()
	sim.once.Do(func() { sim.tpm, sim.err = simulator.OpenSimulator() })
	if sim.err != nil {
		t.Fatalf("start TPM simulator: %v", sim.err)
	}
	a, err := attest.New(attest.Options{
		TPM: tpmconn.Options{LockPath: filepath.Join(t.TempDir(), "tpm.lock"),
			Open: func() (transport.TPMCloser, error) { return countingTPM{sim.tpm}, nil }},
		Dir:         dir,
		TrustDomain: "example.org",
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newCA(t testing.TB) *spiffe.CA {
	t.Helper()
	ca, err := spiffe.LoadCA(spiffeid.RequireTrustDomainFromString("example.org"), func(dst []byte) error {
		copy(dst, "a seed that the TPM root makes unused, 32 bytes")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestSVIDChainsToTPMRoot: the CA's bundle is the TPM root, whose key the
// host's AK certifies as made in the TPM and bound to it (fixedTPM,
// fixedParent, sensitiveDataOrigin: its private part cannot be read out or
// moved to another TPM); an X.509-SVID carries the intermediate and chains
// to the root; issuing one sends the TPM no command at all; after a
// restart the root certificate is the same.
func TestSVIDChainsToTPMRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "attest")
	att := newAttester(t, dir)
	ca := newCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	var log strings.Builder
	done, err := Start(ctx, Options{Root: att, CA: ca, TTL: 2 * time.Hour, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	if !strings.Contains(log.String(), `SPIFFE root "northstar TPM root `) {
		t.Errorf("start logged %q", log.String())
	}

	// The root's key, as the AK certified it.
	r, akPub, err := att.RootCertification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, attrs, err := attest.VerifyRoot(r, akPub)
	if err != nil {
		t.Fatalf("the root's certification does not verify: %v", err)
	}
	for _, a := range []string{"fixedTPM", "fixedParent", "sensitiveDataOrigin", "sign"} {
		if !strings.Contains(attrs, a) {
			t.Errorf("the certified root key lacks %s: %s", a, attrs)
		}
	}
	if strings.Contains(attrs, "restricted") {
		t.Errorf("the root key is restricted (it could not sign certificates): %s", attrs)
	}
	if !ca.Certificate().Equal(rootCert) {
		t.Fatal("the CA's bundle is not the TPM root")
	}

	// An SVID chains to the root through the intermediate, and issuing
	// it asks the TPM nothing.
	before := sim.sends.Load()
	id := spiffeid.RequireFromString("spiffe://example.org/client")
	var svid *spiffe.X509SVID
	for range 50 {
		if svid, err = ca.IssueX509(id, time.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := sim.sends.Load() - before; n != 0 {
		t.Errorf("issuing 50 X.509-SVIDs sent the TPM %d commands, want none", n)
	}
	certs, err := x509.ParseCertificates(svid.Cert)
	if err != nil || len(certs) != 2 {
		t.Fatalf("the SVID's chain: %d certificates, %v; want the leaf and the intermediate", len(certs), err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	inter.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the SVID does not chain to the TPM root: %v", err)
	}
	if !certs[1].IsCA || !certs[1].MaxPathLenZero || certs[1].NotAfter.Sub(certs[1].NotBefore) != 2*time.Hour {
		t.Errorf("intermediate: CA %v, path len zero %v, lifetime %s", certs[1].IsCA, certs[1].MaxPathLenZero, certs[1].NotAfter.Sub(certs[1].NotBefore))
	}

	// An agent restart: the same root, a new intermediate.
	ca2 := newCA(t)
	done2, err := Start(ctx, Options{Root: newAttester(t, dir), CA: ca2, TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-done2 }()
	if !ca2.Certificate().Equal(ca.Certificate()) {
		t.Error("the root certificate changed at a restart")
	}
}

// TestSVIDLifetimeBoundedByIntermediate: an SVID never outlives the
// intermediate that signed it; the intermediate is renewed at half its
// life, ahead of need.
func TestSVIDLifetimeBoundedByIntermediate(t *testing.T) {
	att := newAttester(t, filepath.Join(t.TempDir(), "attest"))
	ca := newCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	done, err := Start(ctx, Options{Root: att, CA: ca, TTL: 10 * time.Minute, now: clock, poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	id := spiffeid.RequireFromString("spiffe://example.org/client")
	svid, err := ca.IssueX509(id, clock(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := x509.ParseCertificates(svid.Cert)
	if !svid.NotAfter.Equal(certs[1].NotAfter) {
		t.Errorf("SVID valid until %s, its intermediate until %s", svid.NotAfter, certs[1].NotAfter)
	}
	// Past half-life the keeper signs a new intermediate by itself.
	mu.Lock()
	now = now.Add(6 * time.Minute)
	mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := ca.IssueX509(id, clock(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificates(s.Cert)
		if !c[1].Equal(certs[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new intermediate past half-life")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReprovisionedTPMSaysSo: a cleared TPM cannot load the AK and root
// kept for it; the agent says so and what to do, and issues nothing.
func TestReprovisionedTPMSaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "attest")
	ctx, cancel := context.WithCancel(context.Background())
	done, err := Start(ctx, Options{Root: newAttester(t, dir), CA: newCA(t), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if _, err := (tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}).Execute(sim.tpm); err != nil {
		t.Fatalf("TPM2_Clear: %v", err)
	}
	_, err = Start(context.Background(), Options{Root: newAttester(t, dir), CA: newCA(t), TTL: time.Hour})
	if !errors.Is(err, attest.ErrReprovisioned) || !strings.Contains(err.Error(), "a new root") {
		t.Fatalf("after TPM2_Clear: %v, want ErrReprovisioned naming a new root", err)
	}
}

// BenchmarkIssueX509 compares issuing an X.509-SVID under the TPM root
// (signed by the in-memory intermediate) with the seed's CA: the same
// work, no TPM command.
func BenchmarkIssueX509(b *testing.B) {
	id := spiffeid.RequireFromString("spiffe://example.org/client")
	seed, tpmRooted := newCA(b), newCA(b)
	ctx, cancel := context.WithCancel(context.Background())
	done, err := Start(ctx, Options{Root: newAttester(b, filepath.Join(b.TempDir(), "attest")), CA: tpmRooted, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	for name, ca := range map[string]*spiffe.CA{"seed": seed, "tpm-root": tpmRooted} {
		b.Run(name, func(b *testing.B) {
			before := sim.sends.Load()
			for b.Loop() {
				if _, err := ca.IssueX509(id, time.Now(), time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(sim.sends.Load()-before)/float64(b.N), "tpm-cmds/op")
		})
	}
}
