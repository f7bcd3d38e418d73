// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/northstar-oci/northstar/internal/testenv"
)

// panicky is a Limiter that panics while armed.
type panicky struct{ armed chan struct{} }

func (p *panicky) Take(context.Context) (bool, time.Duration) {
	select {
	case <-p.armed:
		return true, 0
	default:
		panic("limiter bug")
	}
}

// TestPanicCostsOneCall: a handler that panics (here in the rate limiter,
// which every call passes) fails that call with Internal, unary or
// stream, says so in one line of the agent's log, and the server serves
// on. gRPC itself does not recover a handler's panic: the process ends.
func TestPanicCostsOneCall(t *testing.T) {
	ca := newCA(t, 1)
	p := &panicky{armed: make(chan struct{})}
	log := &testenv.SyncBuffer{}
	ts := serve(t, ca, "client", func(c *Config) { c.Limiter, c.Log = p, log })
	cl := ts.client(t)
	ctx := header(timeout(t))
	_, err := cl.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
	if status.Code(err) != codes.Internal {
		t.Errorf("a unary call whose handler panicked: %v, want Internal", err)
	}
	err = recvErr(cl.FetchX509SVID(ctx, &workload.X509SVIDRequest{}))
	if status.Code(err) != codes.Internal {
		t.Errorf("a stream whose handler panicked: %v, want Internal", err)
	}
	if n := strings.Count(log.String(), "panicked"); n != 2 || !strings.Contains(log.String(), "limiter bug") {
		t.Errorf("the agent's log: %q, want one line per panic naming it", log.String())
	}
	close(p.armed)
	if _, err := cl.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}}); err != nil {
		t.Errorf("the next call: %v", err)
	}
}
