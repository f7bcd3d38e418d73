// SPDX-License-Identifier: Apache-2.0

package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/northstar-oci/northstar/agent/control"
	"github.com/northstar-oci/northstar/client"
)

// BenchmarkAPI times each request of the token-pair row of DESIGN.md §7
// against a plain identity round trip, through package client on real
// sockets of an in-process agent: where a token pair's time goes.
func BenchmarkAPI(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	st := initStore(b, dir)
	sock := filepath.Join(dir, "agent", "agent.sock")
	runAgent(b, st, sock, filepath.Join(dir, "audit.log"))
	clients := map[string]*client.Client{}
	for _, id := range []string{"client", "server"} {
		d, err := control.RegisterProcess(ctx, sock, "ctr-"+id, id, sleeper(b).Process.Pid, control.Request{API: true})
		if err != nil {
			b.Fatal(err)
		}
		clients[id] = client.New(filepath.Join(d.Dir, "api.sock"))
	}
	cl, br := clients["client"], clients["server"]
	identity := func() {
		if _, err := cl.Identity(ctx); err != nil {
			b.Fatal(err)
		}
	}
	pair := func() {
		tok, err := cl.Token(ctx, "server", "mqtt", 0)
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

// BenchmarkHTTPFloor is the floor under BenchmarkAPI's ratio: two POSTs
// with a token-sized body to a handler that does nothing, against one GET
// to it, on a unix socket with net/http on both ends. No agent could
// answer a token pair in less than this ratio of identity round trips.
func BenchmarkHTTPFloor(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "floor.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"identity":"client","generation":1}` + "\n"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	do := func(method string, body []byte) {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, _ := http.NewRequest(method, "http://northstar/v1/x", r)
		rsp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, rsp.Body)
		rsp.Body.Close()
	}
	body := bytes.Repeat([]byte("x"), 200) // a token request is about this size
	var gets, posts []time.Duration
	for b.Loop() {
		t0 := time.Now()
		do(http.MethodGet, nil)
		t1 := time.Now()
		do(http.MethodPost, body)
		do(http.MethodPost, body)
		gets, posts = append(gets, t1.Sub(t0)), append(posts, time.Since(t1))
	}
	b.ReportMetric(float64(median(posts))/float64(median(gets)), "ratio")
}
