// SPDX-License-Identifier: Apache-2.0

package delivery

import (
	"os"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestPolicyFor(t *testing.T) {
	user := &specs.Process{User: specs.User{UID: 1000, GID: 1001}}
	tests := []struct {
		name    string
		ann     map[string]string
		want    Policy
		wantErr string
	}{
		{name: "defaults to the process user and config mode", want: Policy{UID: 1000, GID: 1001, Mode: 0o400}},
		{name: "disabled", ann: map[string]string{AnnotationDisable: "true"}, want: Policy{Disabled: true, UID: 1000, GID: 1001, Mode: 0o400}},
		{name: "pod sandbox (pause) gets nothing", ann: map[string]string{"io.kubernetes.cri.container-type": "sandbox", AnnotationMode: "0600"}, want: Policy{Skip: true, Disabled: true, UID: 1000, GID: 1001, Mode: 0o400}},
		{name: "pod workload container", ann: map[string]string{"io.kubernetes.cri.container-type": "container"}, want: Policy{UID: 1000, GID: 1001, Mode: 0o400}},
		{name: "explicitly enabled", ann: map[string]string{AnnotationDisable: "false"}, want: Policy{UID: 1000, GID: 1001, Mode: 0o400}},
		{name: "owner and mode override", ann: map[string]string{AnnotationUID: "0", AnnotationGID: "5", AnnotationMode: "0440"}, want: Policy{UID: 0, GID: 5, Mode: 0o440}},
		{name: "disable typo", ann: map[string]string{AnnotationDisable: "yes"}, wantErr: "want \"true\" or \"false\""},
		{name: "negative uid", ann: map[string]string{AnnotationUID: "-1"}, wantErr: "not a numeric id"},
		{name: "uid overflow", ann: map[string]string{AnnotationUID: "4294967296"}, wantErr: "not a numeric id"},
		{name: "uid is the invalid id", ann: map[string]string{AnnotationUID: "4294967295"}, wantErr: "not a numeric id"},
		{name: "uid name", ann: map[string]string{AnnotationUID: "root"}, wantErr: "not a numeric id"},
		{name: "gid with sign", ann: map[string]string{AnnotationGID: "+5"}, wantErr: "not a numeric id"},
		{name: "writable mode", ann: map[string]string{AnnotationMode: "0600"}, wantErr: "bits other than read"},
		{name: "executable mode", ann: map[string]string{AnnotationMode: "0555"}, wantErr: "bits other than read"},
		{name: "setuid mode", ann: map[string]string{AnnotationMode: "4400"}, wantErr: "bits other than read"},
		{name: "decimal-looking mode", ann: map[string]string{AnnotationMode: "0489"}, wantErr: "not an octal mode"},
		{name: "empty mode", ann: map[string]string{AnnotationMode: ""}, wantErr: "not an octal mode"},
		{name: "zero mode", ann: map[string]string{AnnotationMode: "0"}, wantErr: "grants no read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PolicyFor(&specs.Spec{Process: user, Annotations: tt.ann}, 0o400)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}

// FuzzPolicyFor checks PolicyFor against an oracle written from the
// contract (DESIGN.md §3), not from PolicyFor: which annotation values are
// accepted and what policy results, with each annotation present or absent.
func FuzzPolicyFor(f *testing.F) {
	f.Add(uint8(0), "false", "1000", "1000", "0400", uint32(1000), uint32(1000))
	f.Add(uint8(15), "true", "", "", "", uint32(0), uint32(0))
	f.Add(uint8(14), "x", "-1", "99999999999", "0777", uint32(5), uint32(6))
	f.Add(uint8(8), "", "", "", "0440", uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, present uint8, disable, uid, gid, mode string, puid, pgid uint32) {
		ann := map[string]string{}
		for bit, kv := range [][2]string{{AnnotationDisable, disable}, {AnnotationUID, uid}, {AnnotationGID, gid}, {AnnotationMode, mode}} {
			if present&(1<<bit) != 0 {
				ann[kv[0]] = kv[1]
			}
		}
		got, err := PolicyFor(&specs.Spec{Process: &specs.Process{User: specs.User{UID: puid, GID: pgid}}, Annotations: ann}, 0o400)

		// The oracle.
		want := Policy{UID: puid, GID: pgid, Mode: 0o400}
		ok := true
		if v, set := ann[AnnotationDisable]; set {
			switch v {
			case "true":
				want.Disabled = true
			case "false":
			default:
				ok = false
			}
		}
		if !want.Disabled {
			for _, id := range []struct {
				key string
				out *uint32
			}{{AnnotationUID, &want.UID}, {AnnotationGID, &want.GID}} {
				if v, set := ann[id.key]; set {
					n, good := oracleID(v)
					ok = ok && good
					*id.out = n
				}
			}
			if v, set := ann[AnnotationMode]; set {
				m, good := oracleMode(v)
				ok = ok && good
				want.Mode = m
			}
		}
		switch {
		case ok && err != nil:
			t.Fatalf("PolicyFor(%q) refused a valid policy: %v", ann, err)
		case !ok && err == nil:
			t.Fatalf("PolicyFor(%q) accepted %+v, want an error", ann, *got)
		case ok && *got != want:
			t.Fatalf("PolicyFor(%q) = %+v, want %+v", ann, *got, want)
		}
	})
}

// oracleID: decimal digits only, 1-10 of them, below 2^32-1 (the kernel's
// "no id").
func oracleID(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 10 {
		return 0, false
	}
	var n uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n >= 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// oracleMode: 1-4 octal digits, read bits only, at least one.
func oracleMode(s string) (os.FileMode, bool) {
	if len(s) == 0 || len(s) > 4 {
		return 0, false
	}
	var n uint32
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		n = n*8 + uint32(c-'0')
	}
	if n&^0o444 != 0 || n == 0 {
		return 0, false
	}
	return os.FileMode(n), true
}

func TestIdentityFor(t *testing.T) {
	cri := map[string]string{"io.kubernetes.cri.sandbox-namespace": "default", "io.kubernetes.cri.sandbox-name": "mqtt-0", "io.kubernetes.cri.container-name": "broker"}
	for _, c := range []struct {
		name    string
		ann     map[string]string
		id      string
		want    string
		wantErr string
	}{
		{"the container id", nil, "c1", "c1", ""},
		{"the annotation wins", map[string]string{AnnotationIdentity: "client"}, "c1", "client", ""},
		{"CRI names", cri, "0123abcd", "default/mqtt-0/broker", ""},
		{"the annotation over CRI names", map[string]string{AnnotationIdentity: "mqtt-broker", "io.kubernetes.cri.sandbox-namespace": "x"}, "c1", "mqtt-broker", ""},
		{"malformed annotation", map[string]string{AnnotationIdentity: "two words"}, "c1", "", AnnotationIdentity},
		{"too long annotation", map[string]string{AnnotationIdentity: strings.Repeat("a", 254)}, "c1", "", AnnotationIdentity},
		{"empty annotation", map[string]string{AnnotationIdentity: ""}, "c1", "", AnnotationIdentity},
	} {
		got, err := IdentityFor(&specs.Spec{Annotations: c.ann}, c.id)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: %q, %v; want an error naming %s", c.name, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for v, want := range map[string]bool{"true": true, "false": false} {
		if got, err := APIDisabled(&specs.Spec{Annotations: map[string]string{AnnotationAPIDisable: v}}); err != nil || got != want {
			t.Errorf("api.disable=%s: %v, %v", v, got, err)
		}
	}
	if _, err := APIDisabled(&specs.Spec{Annotations: map[string]string{AnnotationAPIDisable: "yes"}}); err == nil {
		t.Error("api.disable=yes accepted")
	}
}

func BenchmarkPolicyFor(b *testing.B) {
	spec := &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000}},
		Annotations: map[string]string{AnnotationMode: "0440", AnnotationUID: "0"}}
	for b.Loop() {
		if _, err := PolicyFor(spec, 0o400); err != nil {
			b.Fatal(err)
		}
	}
}
