// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/agentmounts"
	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/lifecycle"
	"github.com/northstar-oci/northstar/secretfs"
)

// The wrapper's own work, step by step, in one warm process: what a
// `start` or `delete` adds to the Go process start (TestBenchShimPhases
// times the real processes under containerd). go test -run '^$' -bench . ./shim

func BenchmarkParseArgs(b *testing.B) {
	args := []string{"-namespace", "default", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-bundle", "/run/b", "delete"}
	for b.Loop() {
		if _, err := parseArgs(args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFindRuntime(b *testing.B) {
	for b.Loop() {
		findRuntime()
	}
}

func BenchmarkLoadConfig(b *testing.B) {
	hostConfig(b, "")
	for b.Loop() {
		if _, err := loadConfig(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFindDelegate(b *testing.B) {
	cfg := hostConfig(b, "")
	cfg.Shim.Delegate = "/bin/true"
	for b.Loop() {
		if _, err := findDelegate(cfg, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLifecycleCheck: the lifecycle id and the record, when the
// runtime has not restarted (every start but the first).
func BenchmarkLifecycleCheck(b *testing.B) {
	ctx := context.Background()
	cfg := hostConfig(b, "")
	pid := os.Getpid()
	if err := rotateIfRuntimeRestarted(ctx, cfg, pid); err != nil {
		b.Fatal(err)
	}
	id, _ := lifecycle.ID(pid)
	if gen, got := generation(b, cfg); gen == 0 || got != id {
		b.Fatalf("generation %d lifecycle %q, want %q", gen, got, id)
	}
	for b.Loop() {
		if err := rotateIfRuntimeRestarted(ctx, cfg, pid); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInjectIntoBundle: the config.json rewrite, on containerd 1.6's
// spec for a container of an image.
func BenchmarkInjectIntoBundle(b *testing.B) {
	data, err := os.ReadFile("../hook/entry/testdata/containerd-1.6-image.json")
	if err != nil {
		b.Fatal(err)
	}
	bundle := b.TempDir()
	path := filepath.Join(bundle, "config.json")
	want := entry.New("/usr/bin/northstar-hook", "/etc/northstar/config.toml")
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if changed, err := entry.InjectIntoBundle(bundle, want); err != nil || !changed {
			b.Fatalf("inject: %v, %v", changed, err)
		}
	}
}

// BenchmarkMountsRewrite: the same spec given the agent's mounts instead
// of the hook (read, decide, rewrite), the agent's round trip left out.
func BenchmarkMountsRewrite(b *testing.B) {
	data, err := os.ReadFile("../hook/entry/testdata/containerd-1.6-image.json")
	if err != nil {
		b.Fatal(err)
	}
	cfg := hostConfig(b, "[agent]\nsocket = \"/run/a/agent.sock\"\n")
	bundle := b.TempDir()
	path := filepath.Join(bundle, "config.json")
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		in, perm, err := entry.ReadBundleConfig(bundle)
		if err != nil {
			b.Fatal(err)
		}
		doc, err := entry.ParseConfig(in)
		if err != nil {
			b.Fatal(err)
		}
		if why := agentmounts.WhyHook(cfg, &doc.Spec); why != "" {
			b.Fatal(why)
		}
		if _, err := agentmounts.PrepareRequest(cfg, &doc.Spec, "c1", bundle); err != nil {
			b.Fatal(err)
		}
		out, err := doc.WithMounts(testMounts)
		if err != nil {
			b.Fatal(err)
		}
		if err := entry.WriteBundleConfig(bundle, out, perm); err != nil {
			b.Fatal(err)
		}
	}
}

var testMounts = []specs.Mount{
	{Destination: "/run/northstar", Type: "bind", Source: "/run/a/containers/.prepared-1-secret", Options: secretfs.BindOptions()},
	{Destination: "/run/northstar/api", Type: "bind", Source: "/run/a/containers/.prepared-1", Options: secretfs.BindOptions()},
}
