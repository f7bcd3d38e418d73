// SPDX-License-Identifier: Apache-2.0

package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Federation is trust between attested northstar hosts (docs/attestation.md):
// the agent serves its trust domain's bundle and its attestation evidence
// ([federation] enable), and takes the bundles of the peers it names, each
// only while the peer's TPM evidence verifies.
type Federation struct {
	// Enable serves this host's bundle endpoint and evidence on Listen.
	// It needs [spiffe] root = "tpm": the evidence certifies that root.
	Enable bool `toml:"enable"`
	// Listen is the address the endpoint listens on ("" is ":8443").
	Listen string `toml:"listen"`
	// RefreshHint is the refresh hint this host's bundle carries, and the
	// longest a peer's bundle is trusted without a new check: peers are
	// checked again at 80 % of their hint, at most this ("" is "5m").
	RefreshHint string `toml:"refresh_hint"`
	// Timeout bounds one check of a peer: its evidence, the answer to our
	// challenge and its bundle ("" is "10s").
	Timeout string `toml:"timeout"`
	// Peers are the hosts whose bundles this host's containers receive.
	Peers []FederationPeer `toml:"peer"`
}

// FederationPeer is one [[federation.peer]].
type FederationPeer struct {
	// TrustDomain is the peer's trust domain (not this host's).
	TrustDomain string `toml:"trust_domain"`
	// BundleURL is the peer's bundle endpoint, https://HOST:PORT/bundle.
	BundleURL string `toml:"bundle_url"`
	// EvidenceURL is where the peer answers with evidence ("" is
	// BundleURL's with the path /evidence).
	EvidenceURL string `toml:"evidence_url"`
	// EKCA is a PEM file of the peer's TPM manufacturer's CA certificates.
	EKCA string `toml:"ek_ca"`
	// EK is a PEM file of the peer's EK: its certificate or public key.
	EK string `toml:"ek"`
	// PCRs are "N=HEX" SHA-256 values the peer's quoted PCRs must hold.
	PCRs []string `toml:"pcrs"`
}

// Federation defaults and bounds.
const (
	DefaultFederationListen  = ":8443"
	defaultRefreshHint       = 5 * time.Minute
	defaultFederationTimeout = 10 * time.Second
	minRefreshHint           = time.Second
	maxRefreshHint           = 24 * time.Hour
	minFederationTimeout     = time.Second
	maxFederationTimeout     = time.Minute
)

// FederationListen returns [federation] listen.
func (c *Config) FederationListen() string {
	if c.Federation.Listen == "" {
		return DefaultFederationListen
	}
	return c.Federation.Listen
}

// RefreshHint returns the validated [federation] refresh_hint.
func (c *Config) RefreshHint() time.Duration {
	return durationOr(c.Federation.RefreshHint, defaultRefreshHint)
}

// FederationTimeout returns the validated [federation] timeout.
func (c *Config) FederationTimeout() time.Duration {
	return durationOr(c.Federation.Timeout, defaultFederationTimeout)
}

func durationOr(s string, d time.Duration) time.Duration {
	if s == "" {
		return d
	}
	v, _ := time.ParseDuration(s) // validated by Load
	return v
}

// EvidenceURLOrDefault returns the peer's evidence URL.
func (p *FederationPeer) EvidenceURLOrDefault() string {
	if p.EvidenceURL != "" {
		return p.EvidenceURL
	}
	u, err := url.Parse(p.BundleURL) // validated by Load
	if err != nil {
		return ""
	}
	u.Path, u.RawQuery = "/evidence", ""
	return u.String()
}

// ParsePCRs parses "N=HEX" SHA-256 PCR values (`attest verify --pcr`).
func ParsePCRs(vals []string) (map[int][]byte, error) {
	m := map[int][]byte{}
	for _, v := range vals {
		n, h, ok := strings.Cut(v, "=")
		i, err := strconv.Atoi(n)
		if !ok || err != nil || i < 0 || i > 23 {
			return nil, fmt.Errorf("%q: want N=HEX, N a PCR 0-23", v)
		}
		d, err := hex.DecodeString(h)
		if err != nil || len(d) != 32 {
			return nil, fmt.Errorf("%q: want 64 hex digits (a SHA-256 PCR value)", v)
		}
		if _, dup := m[i]; dup {
			return nil, fmt.Errorf("PCR %d named twice", i)
		}
		m[i] = d
	}
	return m, nil
}

func (c *Config) validateFederation() error {
	f := &c.Federation
	for _, d := range []struct {
		key, val string
		lo, hi   time.Duration
	}{{"refresh_hint", f.RefreshHint, minRefreshHint, maxRefreshHint}, {"timeout", f.Timeout, minFederationTimeout, maxFederationTimeout}} {
		if d.val == "" {
			continue
		}
		if v, err := time.ParseDuration(d.val); err != nil || v < d.lo || v > d.hi {
			return fmt.Errorf("[federation] %s %q: want a duration from %s to %s", d.key, d.val, d.lo, d.hi)
		}
	}
	if f.Enable {
		if c.SPIFFE.Root != SPIFFERootTPM {
			return errors.New("[federation] enable = true serves the attested TPM root: set [spiffe] root = \"tpm\"")
		}
		if _, _, err := net.SplitHostPort(c.FederationListen()); err != nil {
			return fmt.Errorf("[federation] listen %q: want HOST:PORT", f.Listen)
		}
	}
	if (f.Enable || len(f.Peers) > 0) && (c.SPIFFE.TrustDomain == "" || !c.API.Enable) {
		return errors.New("[federation] needs the SPIFFE Workload API: set [api] enable = true and [spiffe] trust_domain")
	}
	if (f.Enable || len(f.Peers) > 0) && c.SPIFFE.Issuer != IssuerLocal {
		return fmt.Errorf("[federation] is the local CA's: with [spiffe] issuer = %q the SPIRE server federates; remove [federation]", c.SPIFFE.Issuer)
	}
	seen := map[string]bool{c.SPIFFE.TrustDomain: true}
	for i, p := range f.Peers {
		where := fmt.Sprintf("[[federation.peer]] %d", i+1)
		// ValidTrustDomain, not go-spiffe's parser: the hook reads this
		// config and must not link the SPIFFE libraries.
		if !ValidTrustDomain(p.TrustDomain) {
			return fmt.Errorf("%s: trust_domain %q: want a bare trust domain name of [a-z0-9._-]", where, p.TrustDomain)
		}
		if seen[p.TrustDomain] {
			return fmt.Errorf("%s: trust_domain %q is this host's or another peer's", where, p.TrustDomain)
		}
		seen[p.TrustDomain] = true
		for _, u := range []struct{ key, val string }{{"bundle_url", p.BundleURL}, {"evidence_url", p.EvidenceURL}} {
			if u.val == "" && u.key == "evidence_url" {
				continue
			}
			if pu, err := url.Parse(u.val); err != nil || pu.Scheme != "https" || pu.Host == "" {
				return fmt.Errorf("%s: %s %q: want an https:// URL", where, u.key, u.val)
			}
		}
		if !filepath.IsAbs(p.EKCA) || !filepath.IsAbs(p.EK) {
			return fmt.Errorf("%s: ek_ca and ek must be absolute paths of PEM files (the peer's TPM maker's CA, and its EK)", where)
		}
		if _, err := ParsePCRs(p.PCRs); err != nil {
			return fmt.Errorf("%s: pcrs: %v", where, err)
		}
	}
	return nil
}
