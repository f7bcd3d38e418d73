//go:build integration

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The agent under a hostile neighbour, second round (DESIGN.md §15): one
// test per point, real runc (and podman) containers as the attacker and
// the victim, each printing what the attacker got.

// sharePID puts the bundle's container in the PID namespace of process
// pid (podman --pid container:X, Kubernetes shareProcessNamespace).
func (b *bundle) sharePID(pid int) *bundle {
	for i, ns := range b.spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			b.spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/pid", pid)
		}
	}
	return b
}

// annotate sets annotations on the bundle's spec.
func (b *bundle) annotate(kv ...string) *bundle {
	if b.spec.Annotations == nil {
		b.spec.Annotations = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.spec.Annotations[kv[i]] = kv[i+1]
	}
	return b
}

// TestNeighbourSharesAPIDNamespace: mallory shares the victim's PID
// namespace and goes for its sockets through /proc/1/root. Before, she
// got the victim's identity, its SVID and tokens that verify as the
// victim. Now each connection is checked against the container's mount
// namespace, and a container of another identity that would share the
// victim's PID namespace is refused at start.
func TestNeighbourSharesAPIDNamespace(t *testing.T) {
	requires(t, "runc")
	e, sock := spiffeEnv(t, "")
	startAgent(t, e, sock)
	root := filepath.Join(e.dir, "runc-share")
	victim := spiffeBundle(t, e, "victim", "sleep 600").runDetached(t, root, fmt.Sprintf("victim-%d", containerSeq.Add(1)))
	pid := victim.pid(t)

	// Mallory without northstar of her own (the hook registers nothing),
	// in the victim's PID namespace: the victim's sockets are in reach at
	// /proc/1/root/run/northstar/api.
	attack := `api=/proc/1/root/run/northstar/api
ls $api
echo "identity: $(NSAPI_SOCKET=$api/api.sock nsapi identity 2>&1)"
echo "token: $(NSAPI_SOCKET=$api/api.sock nsapi token victim mqtt 2>&1 | head -c 120)"
echo "svid: $(SPIFFE_ENDPOINT_SOCKET=unix://$api/spiffe.sock busybox timeout 5 nsspiffe x509 2>&1 | head -c 120)"
echo "secret file: $(wc -c < /proc/1/root/run/northstar/secret 2>&1) bytes (not defended: see docs/security.md)"
`
	r := spiffeBundle(t, e, "", attack).annotate("io.northstar.secret.disable", "true", "io.northstar.api.disable", "true").sharePID(pid).runcRun(t)
	t.Logf("mallory, sharing the victim's PID namespace, without northstar, got:\n%s", r.stdout)
	if r.err != nil {
		t.Fatalf("mallory's container:\n%s", r)
	}
	if !strings.Contains(r.stdout, "api.sock") {
		t.Fatalf("the victim's API directory is not in reach through /proc: the test does not test:\n%s", r.stdout)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "identity: victim") || strings.HasPrefix(l, "svid: spiffe://") || strings.HasPrefix(l, "token: ") && !strings.Contains(l, "nsapi:") {
			t.Errorf("mallory spoke as the victim: %s", l)
		}
	}

	// Mallory with northstar and an identity of her own: refused at start.
	r = spiffeBundle(t, e, "mallory", "nsapi identity").sharePID(pid).runcRun(t)
	t.Logf("mallory, sharing the victim's PID namespace as identity mallory: %v\n%s", r.err, r.stderr)
	if r.err == nil || !strings.Contains(r.stderr, "shares its PID namespace with container "+victim.id) {
		t.Errorf("a container of another identity in the victim's PID namespace started, or the refusal does not name it:\n%s", r)
	}

	// The victim, meanwhile, is itself.
	if got := victim.sh(t, "nsapi identity"); !strings.HasPrefix(got, "victim ") {
		t.Errorf("the victim's identity: %q", got)
	}
	if got := victim.sh(t, "nsspiffe x509 | cut -d' ' -f1"); got != "spiffe://example.org/victim" {
		t.Errorf("the victim's SVID: %q", got)
	}
}
