// SPDX-License-Identifier: Apache-2.0

package api

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/northstar-oci/northstar/agent/keys"
	"github.com/northstar-oci/northstar/internal/testenv"
)

// panicAgent panics in Current while armed.
type panicAgent struct {
	*testAgent
	mu    sync.Mutex
	armed bool
}

func (p *panicAgent) Current() (*keys.Root, uint64, uint64) {
	p.mu.Lock()
	armed := p.armed
	p.mu.Unlock()
	if armed {
		panic("agent bug")
	}
	return p.testAgent.Current()
}

// TestPanicCostsOneRequest: a handler that panics answers 500 with one
// line in the agent's log, and the socket serves the next request.
func TestPanicCostsOneRequest(t *testing.T) {
	p := &panicAgent{testAgent: newTestAgent(t), armed: true}
	log := &testenv.SyncBuffer{}
	sock := t.TempDir() + "/api.sock"
	srv := NewServer("client", p, Limits{})
	srv.SetLog(log)
	c, _ := serveOn(t, srv, sock)
	if code, v := c.do(http.MethodGet, "/v1/identity", ""); code != http.StatusInternalServerError || v["error"] != "internal error" {
		t.Errorf("a request whose handler panicked: %d %v, want 500", code, v)
	}
	if got := log.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "agent bug") || !strings.Contains(got, "/v1/identity") {
		t.Errorf("the agent's log: %q, want one line naming the request and the panic", got)
	}
	p.mu.Lock()
	p.armed = false
	p.mu.Unlock()
	if v := c.ok(http.MethodGet, "/v1/identity", ""); v["identity"] != "client" {
		t.Errorf("the next request: %v", v)
	}
}
