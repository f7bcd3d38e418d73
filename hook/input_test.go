package hook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/secretfs"
)

func TestParseState(t *testing.T) {
	good := `{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/run/b"}`
	if st, err := ParseState([]byte(good)); err != nil || st.Pid != 42 || st.Bundle != "/run/b" {
		t.Fatalf("ParseState(good) = %+v, %v", st, err)
	}
	bad := map[string]string{
		"empty":            ``,
		"not json":         `hello`,
		"truncated":        `{"id":"c1","pid":4`,
		"no id":            `{"pid":42,"bundle":"/b"}`,
		"no pid":           `{"id":"c1","bundle":"/b"}`,
		"negative pid":     `{"id":"c1","pid":-1,"bundle":"/b"}`,
		"relative bundle":  `{"id":"c1","pid":42,"bundle":"b"}`,
		"pid as string":    `{"id":"c1","pid":"42","bundle":"/b"}`,
		"oversized":        `{"id":"c1","pid":42,"bundle":"/b","annotations":{"x":"` + strings.Repeat("a", maxStateSize) + `"}}`,
		"array":            `[]`,
		"bundle traversal": `{"id":"c1","pid":42,"bundle":"../../etc"}`,
	}
	for name, in := range bad {
		if _, err := ParseState([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/run/b"}`))
	f.Add([]byte(`{"id":"","pid":0}`))
	f.Add([]byte(`{"id":"x","pid":1,"bundle":"/","annotations":{"io.northstar.secret.mode":"0400"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseState(data)
		if err == nil && (st.ID == "" || st.Pid <= 0 || !filepath.IsAbs(st.Bundle)) {
			t.Fatalf("accepted invalid state %+v", st)
		}
	})
}

func TestLoadSpec(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"ociVersion":"1.2.0","root":{"path":"rootfs"}}`)
	if _, rootfs, err := LoadSpec(dir); err != nil || rootfs != filepath.Join(dir, "rootfs") {
		t.Errorf("relative root: %q, %v", rootfs, err)
	}
	write(`{"ociVersion":"1.2.0","root":{"path":"/abs/rootfs/"}}`)
	if _, rootfs, err := LoadSpec(dir); err != nil || rootfs != "/abs/rootfs" {
		t.Errorf("absolute root: %q, %v", rootfs, err)
	}
	for name, s := range map[string]string{
		"no root":   `{"ociVersion":"1.2.0"}`,
		"not json":  `{`,
		"oversized": `{"root":{"path":"r"},"annotations":{"x":"` + strings.Repeat("a", entry.MaxBundleConfigSize) + `"}}`,
	} {
		write(s)
		if _, _, err := LoadSpec(dir); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := LoadSpec(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing bundle accepted")
	}
}

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
		{name: "pod sandbox (pause) gets nothing", ann: map[string]string{"io.kubernetes.cri.container-type": "sandbox", AnnotationMode: "0600"}, want: Policy{Disabled: true, UID: 1000, GID: 1001, Mode: 0o400}},
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

func FuzzPolicyFor(f *testing.F) {
	f.Add("false", "1000", "1000", "0400")
	f.Add("true", "", "", "")
	f.Add("x", "-1", "99999999999", "0777")
	f.Fuzz(func(t *testing.T, disable, uid, gid, mode string) {
		p, err := PolicyFor(&specs.Spec{Annotations: map[string]string{
			AnnotationDisable: disable, AnnotationUID: uid, AnnotationGID: gid, AnnotationMode: mode,
		}}, 0o400)
		if err != nil || p.Disabled {
			return
		}
		if p.Mode&^0o444 != 0 || p.Mode == 0 {
			t.Fatalf("accepted mode %#o from %q", p.Mode, mode)
		}
		if _, err := secretfs.ParseMode(mode); err != nil {
			t.Fatalf("accepted bad mode %q", mode)
		}
	})
}
