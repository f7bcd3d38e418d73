// SPDX-License-Identifier: Apache-2.0

package config

import (
	"strings"
	"testing"
	"time"
)

// TestFederation: the [federation] keys, their defaults, and each
// refusal naming the key.
func TestFederation(t *testing.T) {
	const base = "state_dir = \"/s\"\nsealer = \"tpm\"\n[tpm]\npath = \"/dev/tpmrm0\"\n[agent]\nsocket = \"/run/a.sock\"\n[api]\nenable = true\n" +
		"[spiffe]\ntrust_domain = \"a.test\"\nroot = \"tpm\"\n"
	const peer = "[[federation.peer]]\ntrust_domain = \"b.test\"\nbundle_url = \"https://10.0.0.2:8443/bundle\"\nek_ca = \"/p/ca.pem\"\nek = \"/p/ek.pem\"\n"
	c, err := Parse([]byte(base + "[federation]\nenable = true\n" + peer + "pcrs = [\"16=" + strings.Repeat("ab", 32) + "\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.FederationListen() != ":8443" || c.RefreshHint() != 5*time.Minute || c.FederationTimeout() != 10*time.Second {
		t.Errorf("defaults: %s %s %s", c.FederationListen(), c.RefreshHint(), c.FederationTimeout())
	}
	p := c.Federation.Peers[0]
	if p.EvidenceURLOrDefault() != "https://10.0.0.2:8443/evidence" {
		t.Errorf("evidence URL %q", p.EvidenceURLOrDefault())
	}
	if pcrs, err := ParsePCRs(p.PCRs); err != nil || len(pcrs[16]) != 32 {
		t.Errorf("pcrs: %v %v", pcrs, err)
	}
	for in, want := range map[string]string{
		strings.Replace(base, "root = \"tpm\"", "", 1) + "[federation]\nenable = true\n": "set [spiffe] root = \"tpm\"",
		strings.Replace(base, "trust_domain = \"a.test\"", "", 1) + peer:                 "needs the SPIFFE Workload API",
		strings.Replace(base, "root = \"tpm\"", "issuer = \"spire\"", 1) + peer:          "the SPIRE server federates",
		base + "[federation]\nrefresh_hint = \"10ms\"\n":                                 "[federation] refresh_hint \"10ms\"",
		base + "[federation]\ntimeout = \"2m\"\n":                                        "[federation] timeout \"2m\"",
		base + "[federation]\nenable = true\nlisten = \"8443\"\n":                        "[federation] listen",
		base + strings.Replace(peer, "b.test", "a.test", 1):                              "is this host's or another peer's",
		base + peer + peer: "is this host's or another peer's",
		base + strings.Replace(peer, "https://", "http://", 1): "bundle_url \"http://10.0.0.2:8443/bundle\": want an https:// URL",
		base + peer + "evidence_url = \"ftp://x\"\n":           "evidence_url",
		base + strings.Replace(peer, "/p/ek.pem", "ek.pem", 1): "ek_ca and ek must be absolute paths",
		base + peer + "pcrs = [\"24=00\"]\n":                   "pcrs: \"24=00\": want N=HEX",
		base + peer + "pcrs = [\"7=00\"]\n":                    "want 64 hex digits",
		base + strings.Replace(peer, "b.test", "B/x", 1):       "trust_domain \"B/x\"",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}
