// SPDX-License-Identifier: Apache-2.0

package ctl

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/northstar-oci/northstar/agent/measure"
	"github.com/northstar-oci/northstar/agent/spiffe"
	"github.com/northstar-oci/northstar/agent/tpmca"
	"github.com/northstar-oci/northstar/attest"
	"github.com/northstar-oci/northstar/config"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/seal/tpmconn"
)

// attester returns the host's attester for cfg's TPM (sealer = "tpm").
// Its keys live in <state_dir>/attest.
func attester(cfg *config.Config) (*attest.Attester, error) {
	if cfg.Sealer != seal.KindTPM {
		return nil, fmt.Errorf("attestation needs the TPM: sealer is %q; set sealer = %q and [tpm] path", cfg.Sealer, seal.KindTPM)
	}
	opts := attest.Options{
		TPM:         tpmconn.Options{Path: cfg.TPM.Path, LockPath: cfg.TPMLockPath()},
		Dir:         filepath.Join(cfg.StateDir, "attest"),
		TrustDomain: cfg.SPIFFE.TrustDomain,
		Timeout:     cfg.TPMTimeout(),
	}
	if cfg.Measure.Enable {
		opts.Containers = &attest.ContainerLog{Path: filepath.Join(cfg.StateDir, measure.FileName), Index: measureIndex(cfg)}
	}
	return attest.New(opts)
}

func runAttest(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "verify":
			return runAttestVerify(env, args[1:])
		case "challenge":
			return runAttestChallenge(env, args[1:])
		}
	}
	fs, cfgPath := flags(env, "attest", "--nonce HEX | --challenge FILE   (or: attest verify ..., attest challenge ...)")
	nonceHex := fs.String("nonce", "", "the verifier's nonce, 16 to 64 hex digits")
	chPath := fs.String("challenge", "", "answer this challenge (from 'attest challenge') instead of a nonce given in the clear")
	if _, err := parse(fs, env, args, 0); err != nil {
		return helpOK(err)
	}
	if (*nonceHex == "") == (*chPath == "") {
		return fmt.Errorf("%w: attest needs --nonce HEX or --challenge FILE (one of them)", ErrUsage)
	}
	cfg, err := config.Load(config.Discover(*cfgPath))
	if err != nil {
		return err
	}
	a, err := attester(cfg)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	var ev *attest.Evidence
	if *chPath != "" {
		b, err := os.ReadFile(*chPath)
		if err != nil {
			return fmt.Errorf("attest: %w", err)
		}
		ch, err := attest.ParseChallenge(b)
		if err != nil {
			return fmt.Errorf("attest: %w", err)
		}
		ev, err = a.Answer(ctx, ch)
		if err != nil {
			return err
		}
	} else {
		nonce, err := parseNonce(*nonceHex)
		if err != nil {
			return err
		}
		if ev, err = a.Evidence(ctx, nonce); err != nil {
			return err
		}
	}
	return writeJSON(env.Stdout, ev)
}

func runAttestChallenge(env *Env, args []string) error {
	fs, _ := flags(env, "attest", "challenge --out FILE [EVIDENCE|-]")
	out := fs.String("out", "", "write the challenge here (give it to the host: northstarctl attest --challenge FILE)")
	pos, err := parse(fs, env, args, 1)
	if err != nil {
		return helpOK(err)
	}
	if *out == "" {
		return fmt.Errorf("%w: attest challenge needs --out FILE", ErrUsage)
	}
	ev, err := readEvidence(pos)
	if err != nil {
		return err
	}
	ch, secret, err := attest.NewChallenge(ev)
	if err != nil {
		return fmt.Errorf("attest challenge: %w", err)
	}
	b, err := json.MarshalIndent(ch, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("attest challenge: %w", err)
	}
	// The secret is the nonce the answer must quote: keep it for verify.
	_, err = fmt.Fprintln(env.Stdout, hex.EncodeToString(secret))
	return err
}

// pcrFlags collects --pcr N=HEX.
type pcrFlags map[int][]byte

func (p pcrFlags) String() string { return fmt.Sprint(map[int][]byte(p)) }
func (p pcrFlags) Set(s string) error {
	n, v, ok := strings.Cut(s, "=")
	i, err := strconv.Atoi(n)
	if !ok || err != nil || i < 0 || i > 23 {
		return fmt.Errorf("want N=HEX with N a PCR 0-23, got %q", s)
	}
	d, err := hex.DecodeString(v)
	if err != nil || len(d) != sha256.Size {
		return fmt.Errorf("PCR %d: want a SHA-256 value, 64 hex digits", i)
	}
	p[i] = d
	return nil
}

func runAttestVerify(env *Env, args []string) error {
	fs, _ := flags(env, "attest", "verify --nonce HEX --ek-ca FILE [--pcr N=HEX]... [--ek FILE] [--challenge FILE] [--containers] [EVIDENCE|-]")
	nonceHex := fs.String("nonce", "", "the nonce the evidence must answer (given to 'attest', or printed by 'attest challenge')")
	ekCA := fs.String("ek-ca", "", "PEM file of the TPM manufacturers' CA certificates the EK certificate must chain to")
	ekPath := fs.String("ek", "", "PEM file of the one EK accepted (a certificate or a public key)")
	chPath := fs.String("challenge", "", "the challenge the nonce was the secret of: shows the AK is in the EK's TPM")
	containers := fs.Bool("containers", false, "the evidence must carry the measured-container log")
	pcrs := pcrFlags{}
	fs.Var(pcrs, "pcr", "N=HEX: PCR N (SHA-256) must hold HEX; repeatable")
	pos, err := parse(fs, env, args, 1)
	if err != nil {
		return helpOK(err)
	}
	if *nonceHex == "" || *ekCA == "" {
		return fmt.Errorf("%w: attest verify needs --nonce HEX and --ek-ca FILE", ErrUsage)
	}
	nonce, err := parseNonce(*nonceHex)
	if err != nil {
		return err
	}
	p := attest.Policy{Nonce: nonce, PCRs: pcrs, Containers: *containers}
	if p.EKRoots, p.EKIntermediates, err = readCAs(*ekCA); err != nil {
		return fmt.Errorf("attest verify: --ek-ca: %w", err)
	}
	if *ekPath != "" {
		if p.EK, err = readEK(*ekPath); err != nil {
			return fmt.Errorf("attest verify: --ek: %w", err)
		}
	}
	if *chPath != "" {
		b, err := os.ReadFile(*chPath)
		if err != nil {
			return fmt.Errorf("attest verify: %w", err)
		}
		if p.Challenge, err = attest.ParseChallenge(b); err != nil {
			return fmt.Errorf("attest verify: %w", err)
		}
	}
	ev, err := readEvidence(pos)
	if err != nil {
		return err
	}
	proof, err := attest.Verify(ev, p)
	if err != nil {
		return fmt.Errorf("attest verify: %w", err)
	}
	return printProof(env.Stdout, proof, nonce)
}

func printProof(w io.Writer, p *attest.Proof, nonce []byte) error {
	ekDER, _ := x509.MarshalPKIXPublicKey(p.EK.PublicKey)
	fmt.Fprintf(w, "ok    the EK %s is a TPM's, certified by %q\n", short(ekDER), p.EK.Issuer.String())
	fmt.Fprintf(w, "ok    the AK %s is a restricted signing key made in a TPM\n", short(p.AK))
	if p.AKBound {
		fmt.Fprintln(w, "ok    the AK is in that EK's TPM (it released the challenge's secret)")
	} else {
		fmt.Fprintln(w, "note  the AK is not shown to be in that EK's TPM: the nonce was given in the clear (use 'attest challenge')")
	}
	fmt.Fprintf(w, "ok    the quote answers nonce %s and covers %d SHA-256 PCRs\n", hex.EncodeToString(nonce), len(p.PCRs))
	for _, i := range p.Checked {
		for _, v := range p.PCRs {
			if v.Index == i {
				fmt.Fprintf(w, "ok    PCR %d = %s\n", i, hex.EncodeToString(v.SHA256))
			}
		}
	}
	spki, _ := x509.MarshalPKIXPublicKey(p.Root.PublicKey)
	fmt.Fprintf(w, "ok    the root %q (key %s) is a P-256 key the TPM made and keeps %s, certified by the AK: its private part cannot leave the TPM\n",
		p.Root.Subject.CommonName, short(spki), p.RootAttrs)
	c := p.Containers
	if c == nil {
		fmt.Fprintln(w, "note  no container log: the host measures no containers ([measure] enable)")
		return nil
	}
	fmt.Fprintf(w, "ok    NV index %#x %s, certified by the AK over the nonce: only the agent extends it\n", c.Index, c.Attrs)
	fmt.Fprintf(w, "ok    the container log replays to its value %s: %d batches, %d containers\n", hex.EncodeToString(c.Value[:]), c.Batches, len(c.Events))
	if c.First > 0 {
		fmt.Fprintf(w, "note  the evidence carries the log from record %d on (the records before it are not shown)\n", c.First)
	}
	for _, e := range c.Events {
		fmt.Fprintf(w, "      %s  %-4s %s  identity %s  config sha256:%s  rootfs %s\n",
			e.Time.Format(time.RFC3339Nano), e.Via, e.ID, e.Identity, hex.EncodeToString(e.Config[:]), e.Rootfs)
	}
	return nil
}

func short(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

func parseNonce(s string) ([]byte, error) {
	nonce, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: --nonce: not hex: %v", ErrUsage, err)
	}
	if err := attest.CheckNonce(nonce); err != nil {
		return nil, fmt.Errorf("%w: --nonce: %v", ErrUsage, err)
	}
	return nonce, nil
}

// readEvidence reads evidence from the one file named, or stdin.
func readEvidence(pos []string) (*attest.Evidence, error) {
	var r io.Reader = os.Stdin
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return nil, fmt.Errorf("attest: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, attest.MaxEvidence+1))
	if err != nil {
		return nil, fmt.Errorf("attest: read the evidence: %w", err)
	}
	ev, err := attest.ParseEvidence(b)
	if err != nil {
		return nil, fmt.Errorf("attest verify: %w", err)
	}
	return ev, nil
}

// readCAs reads PEM certificates: the self-signed ones are roots, the
// others intermediates.
func readCAs(path string) (roots, intermediates *x509.CertPool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, nil, err
		}
		if c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
		} else {
			intermediates.AddCert(c)
		}
		n++
	}
	if n == 0 {
		return nil, nil, errors.New("no PEM certificate in it")
	}
	return roots, intermediates, nil
}

// readEK reads an EK as a PEM certificate or public key; returns PKIX DER.
func readEK(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	switch blk.Type {
	case "PUBLIC KEY":
		return blk.Bytes, nil
	case "CERTIFICATE":
		c, err := attest.ParseEKCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return x509.MarshalPKIXPublicKey(c.PublicKey)
	}
	return nil, fmt.Errorf("a PEM %q, want CERTIFICATE or PUBLIC KEY", blk.Type)
}

// tpmRoot is the agent's [spiffe] root = "tpm": the CA's root is the
// attester's TPM key, which signs an intermediate every ca_ttl, kept
// fresh until ctx (the agent's life) ends.
func tpmRoot(ctx context.Context, cfg *config.Config, log io.Writer) (func(context.Context, *spiffe.CA) error, error) {
	a, err := attester(cfg)
	if err != nil {
		return nil, err
	}
	return func(_ context.Context, ca *spiffe.CA) error {
		_, err := tpmca.Start(ctx, tpmca.Options{Root: a, CA: ca, TTL: cfg.CATTL(), Log: log})
		return err
	}, nil
}
