// SPDX-License-Identifier: Apache-2.0

package identity

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestSPIFFEPath(t *testing.T) {
	for _, c := range []struct{ identity, path string }{
		{"client", "/client"},
		{"default/mqtt-0/broker", "/default/mqtt-0/broker"}, // CRI: three segments, unchanged
		{"svc@example.org:443", "/svc_40example.org_3A443"},
		{"my_app", "/my_5Fapp"},
		{"_5F", "/_5F5F"}, // an escape in the input is escaped itself
		{"a//b", "/a/_/b"},
		{"/lead", "/_/lead"},
		{"trail/", "/trail/_"},
		{"/", "/_/_"},
		{".", "/_2E"},
		{"..", "/_2E_2E"},
		{"../../etc", "/_2E_2E/_2E_2E/etc"},
		{"...", "/..."}, // only "." and ".." are refused segments
		{".hidden/a.b", "/.hidden/a.b"},
		{strings.Repeat(":", MaxLen), "/" + strings.Repeat("_3A", MaxLen)},
	} {
		got, err := SPIFFEPath(c.identity)
		if err != nil || got != c.path {
			t.Errorf("SPIFFEPath(%q) = %q, %v; want %q", c.identity, got, err, c.path)
			continue
		}
		// go-spiffe, not our code, judges the path.
		if _, err := spiffeid.FromPath(spiffeid.RequireTrustDomainFromString("example.org"), got); err != nil {
			t.Errorf("SPIFFEPath(%q) = %q, which go-spiffe refuses: %v", c.identity, got, err)
		}
		if back, err := FromSPIFFEPath(got); err != nil || back != c.identity {
			t.Errorf("FromSPIFFEPath(%q) = %q, %v; want %q", got, back, err, c.identity)
		}
	}
	for _, bad := range []string{"", "with space", strings.Repeat("a", MaxLen+1), "ünï"} {
		if p, err := SPIFFEPath(bad); err == nil {
			t.Errorf("SPIFFEPath(%q) = %q, want an error", bad, p)
		}
	}
}

// TestFromSPIFFEPathRefuses: only what SPIFFEPath writes decodes, so two
// paths never name one identity (lower-case hex, a dot escaped where it
// need not be, an escape of a character that is never escaped).
func TestFromSPIFFEPathRefuses(t *testing.T) {
	for _, p := range []string{
		"", "/", "client", "//", "/a/", "/a//b",
		"/_3a", "/a_", "/a_3", "/_2E.", "/a_2Eb", "/_2E_2E_2E", "/_41", "/_2F",
		"/.", "/..", "/_5", "/_ZZ", "/a b", "/" + strings.Repeat("a", MaxLen+1),
	} {
		if id, err := FromSPIFFEPath(p); err == nil {
			t.Errorf("FromSPIFFEPath(%q) = %q, want an error", p, id)
		}
	}
}

// FuzzSPIFFEPath: for every identity, the path is one go-spiffe accepts
// and decodes back to it (so the map is injective); every path that
// decodes is the one its identity maps to (so it is canonical).
func FuzzSPIFFEPath(f *testing.F) {
	for _, s := range []string{"client", "default/mqtt-0/broker", "svc@example.org:443", "a//../b", "_3A", "/", "_"} {
		f.Add(s)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := SPIFFEPath(s); Valid(s) {
			if err != nil {
				t.Fatalf("SPIFFEPath(%q): %v", s, err)
			}
			if _, err := spiffeid.FromPath(td, p); err != nil {
				t.Fatalf("SPIFFEPath(%q) = %q, which go-spiffe refuses: %v", s, p, err)
			}
			if back, err := FromSPIFFEPath(p); err != nil || back != s {
				t.Fatalf("FromSPIFFEPath(SPIFFEPath(%q) = %q) = %q, %v", s, p, back, err)
			}
		} else if err == nil {
			t.Fatalf("SPIFFEPath(%q) = %q for a string that is no identity", s, p)
		}
		if id, err := FromSPIFFEPath(s); err == nil {
			if p, _ := SPIFFEPath(id); p != s {
				t.Fatalf("FromSPIFFEPath(%q) = %q, which maps to %q", s, id, p)
			}
		}
	})
}
