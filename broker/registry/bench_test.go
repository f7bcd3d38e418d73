package registry

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent"
	"github.com/northstar-oci/northstar/client"
	"github.com/northstar-oci/northstar/seal"
	"github.com/northstar-oci/northstar/store"
)

// BenchmarkAPI times each request of the token-pair row of DESIGN.md §7
// against a plain identity round trip, through package client on real
// sockets of an in-process broker: where a token pair's time goes.
func BenchmarkAPI(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	st := store.New(filepath.Join(dir, "state"), seal.NewHost(filepath.Join(dir, "state", seal.HostKeyFile)))
	if _, _, err := st.Init(ctx, ""); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "agent", "agent.sock")
	runBroker(b, st, sock, filepath.Join(dir, "audit.log"))
	clients := map[string]*client.Client{}
	for _, id := range []string{"client", "broker"} {
		d, err := agent.Register(ctx, sock, agent.Registration{ID: "ctr-" + id, Identity: id, Pid: sleeper(b).Process.Pid})
		if err != nil {
			b.Fatal(err)
		}
		clients[id] = client.New(filepath.Join(d, "api.sock"))
	}
	cl, br := clients["client"], clients["broker"]
	identity := func() {
		if _, err := cl.Identity(ctx); err != nil {
			b.Fatal(err)
		}
	}
	pair := func() {
		tok, err := cl.Token(ctx, "broker", "mqtt", 0)
		if err != nil {
			b.Fatal(err)
		}
		if v, err := br.VerifyToken(ctx, tok.Token, "client", "mqtt"); err != nil || !v.Valid {
			b.Fatal(v, err)
		}
	}
	// Interleaved, so both sides see the same machine: the ratio of the
	// medians is the §7 row (target <= 2), in-process.
	b.Run("pair/identity", func(b *testing.B) {
		var ids, pairs []time.Duration
		for b.Loop() {
			t0 := time.Now()
			identity()
			t1 := time.Now()
			pair()
			ids, pairs = append(ids, t1.Sub(t0)), append(pairs, time.Since(t1))
		}
		b.ReportMetric(float64(median(pairs))/float64(median(ids)), "ratio")
		b.ReportMetric(float64(median(ids).Microseconds()), "identity-µs")
		b.ReportMetric(float64(median(pairs).Microseconds()), "pair-µs")
	})
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
