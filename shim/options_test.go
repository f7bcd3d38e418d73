package shim

import (
	"os"
	"path/filepath"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/durationpb"
)

func anyOf(t *testing.T, v any) *ptypes.Any {
	t.Helper()
	a, err := typeurl.MarshalAny(v)
	if err != nil {
		t.Fatal(err)
	}
	return protobuf.FromAny(a)
}

func runcOpts(t *testing.T, r *taskAPI.CreateTaskRequest) *options.Options {
	t.Helper()
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := v.(*options.Options)
	if !ok {
		t.Fatalf("options are %T, want runc options", v)
	}
	return o
}

func TestNormalizeOptions(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		r := &taskAPI.CreateTaskRequest{}
		if err := normalizeOptions(r); err != nil || r.Options != nil {
			t.Errorf("err = %v, options = %v", err, r.Options)
		}
	})
	t.Run("runc options pass through", func(t *testing.T) {
		r := &taskAPI.CreateTaskRequest{Options: anyOf(t, &options.Options{SystemdCgroup: true, Root: "/r"})}
		if err := normalizeOptions(r); err != nil {
			t.Fatal(err)
		}
		if o := runcOpts(t, r); !o.SystemdCgroup || o.Root != "/r" {
			t.Errorf("options = %v", o)
		}
	})
	t.Run("CRI generic options body becomes runc options", func(t *testing.T) {
		// What CRI sends for [plugins.cri.containerd.runtimes.northstar.options].
		body := "BinaryName = \"/usr/bin/crun\"\nSystemdCgroup = true\nTypeUrl = \"\"\nUnknownKey = 3\n"
		r := &taskAPI.CreateTaskRequest{Options: anyOf(t, &runtimeoptions.Options{ConfigBody: []byte(body)})}
		if err := normalizeOptions(r); err != nil {
			t.Fatal(err)
		}
		if o := runcOpts(t, r); !o.SystemdCgroup || o.BinaryName != "/usr/bin/crun" {
			t.Errorf("options = %v", o)
		}
	})
	t.Run("CRI generic options file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "runc.toml")
		if err := os.WriteFile(p, []byte("systemdcgroup = true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := &taskAPI.CreateTaskRequest{Options: anyOf(t, &runtimeoptions.Options{ConfigPath: p})}
		if err := normalizeOptions(r); err != nil {
			t.Fatal(err)
		}
		if o := runcOpts(t, r); !o.SystemdCgroup {
			t.Errorf("options = %v", o)
		}
	})
	t.Run("bad generic body", func(t *testing.T) {
		r := &taskAPI.CreateTaskRequest{Options: anyOf(t, &runtimeoptions.Options{ConfigBody: []byte("SystemdCgroup = ")})}
		if err := normalizeOptions(r); err == nil {
			t.Error("accepted")
		}
	})
	t.Run("foreign options type", func(t *testing.T) {
		r := &taskAPI.CreateTaskRequest{Options: anyOf(t, durationpb.New(0))}
		if err := normalizeOptions(r); err == nil {
			t.Error("accepted")
		}
	})
}
