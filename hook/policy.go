package hook

import (
	"fmt"
	"math"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/northstar-oci/northstar/hook/entry"
	"github.com/northstar-oci/northstar/secretfs"
)

// Annotations a container may carry to change how its secret is delivered.
const (
	AnnotationDisable = "io.northstar.secret.disable"
	AnnotationUID     = "io.northstar.secret.uid"
	AnnotationGID     = "io.northstar.secret.gid"
	AnnotationMode    = "io.northstar.secret.mode"
)

// Policy is how one container gets its secret. UID and GID are in the
// container's user namespace.
type Policy struct {
	Disabled bool
	UID, GID uint32
	Mode     os.FileMode
}

// PolicyFor derives the policy from the spec's annotations, its process user
// and the configured default mode. Malformed annotations are errors, never
// silently ignored: a typo must not change who can read the secret.
func PolicyFor(spec *specs.Spec, defaultMode os.FileMode) (*Policy, error) {
	p := &Policy{Mode: defaultMode}
	if spec.Process != nil {
		p.UID, p.GID = spec.Process.User.UID, spec.Process.User.GID
	}
	a := spec.Annotations
	if entry.IsPodSandbox(a) {
		// A Kubernetes pod's pause container runs no workload. Injectors
		// skip it already; a hook that reached it anyway (a base runtime
		// spec applied to sandboxes too) gives it nothing.
		p.Disabled = true
		return p, nil
	}
	if v, ok := a[AnnotationDisable]; ok {
		switch v {
		case "true":
			p.Disabled = true
			return p, nil
		case "false":
		default:
			return nil, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", AnnotationDisable, v)
		}
	}
	var err error
	if v, ok := a[AnnotationUID]; ok {
		if p.UID, err = parseID(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationUID, err)
		}
	}
	if v, ok := a[AnnotationGID]; ok {
		if p.GID, err = parseID(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationGID, err)
		}
	}
	if v, ok := a[AnnotationMode]; ok {
		if p.Mode, err = secretfs.ParseMode(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationMode, err)
		}
	}
	return p, nil
}

// parseID accepts a decimal id; 2^32-1 is the kernel's "no id" and refused.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 || len(s) > 10 {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	return uint32(n), nil
}
