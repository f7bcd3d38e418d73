package shim

import (
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"

	"github.com/northstar-oci/northstar/internal/capped"
)

// maxOptionsFileSize caps a runtime options file named by config_path.
const maxOptionsFileSize = 1 << 20

// normalizeOptions turns the runtime options of a Create request into the
// runc options runc's task service expects.
//
// containerd's CRI plugin sends runc options only to the runtime types it
// knows as runc (io.containerd.runc.v1/v2). For any other runtime_type
// with an [options] table, such as ours, it sends the generic
// runtimeoptions.v1.Options: the table as a TOML body (or a file path).
// runc's service type-asserts the options to runc's type and would panic on
// those, so they are decoded here as runc options (SystemdCgroup,
// BinaryName, Root, ...), as CRI would have done for a runc runtime.
func normalizeOptions(r *taskAPI.CreateTaskRequest) error {
	if r.Options.GetValue() == nil {
		return nil
	}
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		return fmt.Errorf("runtime options: %w", err)
	}
	switch o := v.(type) {
	case *options.Options:
		return nil
	case *runtimeoptions.Options:
		ro, err := runcOptionsFromGeneric(o)
		if err != nil {
			return fmt.Errorf("runtime options: %w", err)
		}
		a, err := typeurl.MarshalAny(ro)
		if err != nil {
			return fmt.Errorf("runtime options: %w", err)
		}
		r.Options = protobuf.FromAny(a)
		return nil
	default:
		return fmt.Errorf("runtime options of type %s: want runc options", r.Options.GetTypeUrl())
	}
}

// runcOptionsFromGeneric decodes a CRI [options] table (TOML) as runc
// options. Keys are matched to runc's option names case-insensitively and
// unknown keys are ignored, as CRI does for runc runtimes.
func runcOptionsFromGeneric(o *runtimeoptions.Options) (*options.Options, error) {
	body := o.ConfigBody
	if o.ConfigPath != "" {
		var err error
		if body, err = capped.ReadFile(o.ConfigPath, maxOptionsFileSize, o.ConfigPath); err != nil {
			return nil, err
		}
	}
	ro := &options.Options{}
	if err := toml.Unmarshal(body, ro); err != nil {
		return nil, fmt.Errorf("decode as runc options: %w", err)
	}
	return ro, nil
}
