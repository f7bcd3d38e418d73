// SPDX-License-Identifier: Apache-2.0

package api

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"
)

// Limits bound what one container can take of the agent through its own
// socket (DESIGN.md §11). Zero fields take the defaults. Naive HTTP
// serving, as the agent had it, bounds none of it: SPIRE's agent, the
// anchor, sets no connection cap or request deadline either, and its rate
// limits are off by default.
type Limits struct {
	// Conns caps the socket's open connections. Connections beyond it
	// wait in the socket's backlog, costing the agent nothing, until one
	// closes: a container that holds many idle or stalled connections
	// spends only its own.
	Conns int
	// Rate and Burst are the socket's token bucket, in requests per
	// second: a request beyond it is answered 429 with Retry-After.
	Rate  float64
	Burst int
	// Timeout bounds reading a request and writing its answer; a request
	// whose headers do not arrive within min(Timeout, 5 s) is dropped,
	// and an idle connection after IdleTimeout.
	Timeout time.Duration
}

// Defaults: a container's API use is a few requests per connection
// start or login. The burst lets 800 verifications in one go through (the
// 8 × 100 token pairs row of DESIGN.md §7, all verified by one socket).
const (
	DefaultConns   = 16
	DefaultRate    = 500
	DefaultBurst   = 1000
	DefaultTimeout = 10 * time.Second
	// IdleTimeout is how long a kept-alive connection may idle.
	IdleTimeout = 30 * time.Second
	// maxHeaderBytes: a request line and headers, not the default
	// megabyte (bodies have MaxBody).
	maxHeaderBytes = 16 << 10
)

func (l Limits) withDefaults() Limits {
	if l.Conns <= 0 {
		l.Conns = DefaultConns
	}
	if l.Rate <= 0 {
		l.Rate = DefaultRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// Server serves the API of one container's socket, under that socket's
// own limits.
type Server struct {
	identity string
	a        Agent
	lim      Limits
	bucket   *rate.Limiter
	refusals refusals
	http     *http.Server
	log      io.Writer // the agent's log, for a handler's panic
}

// NewServer returns the server of the socket whose caller is identity.
func NewServer(identity string, a Agent, lim Limits) *Server {
	lim = lim.withDefaults()
	s := &Server{identity: identity, a: a, lim: lim, bucket: rate.NewLimiter(rate.Limit(lim.Rate), lim.Burst), log: io.Discard}
	s.http = &http.Server{
		Handler:           s.recovering(s.limited(s.routes())),
		ReadHeaderTimeout: min(lim.Timeout, 5*time.Second),
		ReadTimeout:       lim.Timeout,
		WriteTimeout:      lim.Timeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	return s
}

// SetLog sends the line of a handler that panicked to w (the agent's
// log). Call it before Serve.
func (s *Server) SetLog(w io.Writer) {
	s.log = w
	// What net/http itself reports (a failed TLS handshake cannot happen
	// here; a hijacked write can).
	s.http.ErrorLog = log.New(w, "agent: api: ", 0)
}

// recovering answers 500 to a request whose handler panicked and says so
// in one line of the agent's log: the panic costs that request alone.
// (net/http recovers a handler's panic too, but drops the connection and
// the request without an answer, and logs a stack trace to stderr.)
func (s *Server) recovering(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil || v == http.ErrAbortHandler {
				if v != nil {
					panic(v)
				}
				return
			}
			fmt.Fprintf(s.log, "agent: api: %s %s for %s panicked (the request failed, the agent serves on): %v\n", r.Method, r.URL.Path, s.identity, v)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
		}()
		next.ServeHTTP(w, r)
	})
}

// Handler is the server's HTTP handler, limits included (tests serve it
// in-process).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve answers connections on ln, at most Limits.Conns at once, until
// Close.
func (s *Server) Serve(ln net.Listener) error {
	return s.http.Serve(netutil.LimitListener(ln, s.lim.Conns))
}

// Close closes the listener and every connection, and writes what is left
// of the refusal count.
func (s *Server) Close() error {
	err := s.http.Close()
	s.FlushRefusals()
	return err
}

// Take takes one request from the socket's token bucket: ok, or, over
// the rate, false and how long until one would be allowed, after holding
// the caller for up to maxTarpit (or until ctx ends): a container that
// floods its socket then waits on its own connections (at most
// Limits.Conns) instead of spending the agent's CPU, and the other
// containers' CPU, on refusals at full speed (measured: a neighbour
// flooding at full speed made another container's p99 22 times its p99
// alone). The container's other API, the SPIFFE Workload API on
// spiffe.sock beside api.sock, takes from the same bucket (it is its
// spiffe.Limiter), so a container has one rate whichever API it uses.
func (s *Server) Take(ctx context.Context) (ok bool, retryAfter time.Duration) {
	res := s.bucket.Reserve()
	d := res.Delay()
	if d <= 0 {
		return true, 0
	}
	res.Cancel()
	t := time.NewTimer(min(d, maxTarpit))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	return false, d
}

// CountRefusal counts a refusal by the container's other API (the SPIFFE
// Workload API: status is its gRPC code's HTTP equivalent, path its
// method) into this socket's aggregated refusal line.
func (s *Server) CountRefusal(status int, path, msg string) { s.refusals.add(status, path, msg) }

// limited answers 429 to a request over the socket's rate (Take).
func (s *Server) limited(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, d := s.Take(r.Context()); !ok {
			s.fail(w, r, &apiError{status: http.StatusTooManyRequests, retryAfter: d,
				msg: fmt.Sprintf("more than %g requests a second on this socket; try again in %s", s.lim.Rate, d.Round(time.Millisecond))})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// maxTarpit is the longest a request over the rate is held before its 429.
const maxTarpit = 200 * time.Millisecond

// FlushRefusals writes the requests refused since the last flush as one
// audit line, counted by status ("refused": identity, count, statuses,
// the first path and error). The agent calls it every RefusalInterval;
// a line that cannot be written keeps the count for the next time.
func (s *Server) FlushRefusals() {
	fields := s.refusals.take()
	if fields == nil {
		return
	}
	fields["identity"] = s.identity
	if err := s.a.Audit("refused", fields); err != nil {
		s.refusals.putBack(fields)
	}
}

// RefusalInterval is how often each socket's refusals are written as one
// counted audit line.
const RefusalInterval = 10 * time.Second

// refusals counts one socket's refused requests between flushes.
type refusals struct {
	mu       sync.Mutex // guards the rest
	byStatus map[int]int
	since    time.Time
	path     string // of the first refusal since
	msg      string
}

func (r *refusals) add(status int, path, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byStatus == nil {
		r.byStatus, r.since, r.path, r.msg = map[int]int{}, time.Now(), path, msg
	}
	r.byStatus[status]++
}

// take returns the audit fields of the refusals counted so far and starts
// a new count; nil when there were none.
func (r *refusals) take() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byStatus == nil {
		return nil
	}
	statuses := make([]int, 0, len(r.byStatus))
	total := 0
	for st, n := range r.byStatus {
		statuses = append(statuses, st)
		total += n
	}
	sort.Ints(statuses)
	var b strings.Builder
	for i, st := range statuses {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", st, r.byStatus[st])
	}
	f := map[string]string{"count": strconv.Itoa(total), "statuses": b.String(), "since": r.since.UTC().Format(time.RFC3339),
		"path": r.path, "error": r.msg}
	r.byStatus = nil
	return f
}

// putBack merges a count whose line could not be written into the next.
func (r *refusals) putBack(f map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byStatus == nil {
		r.byStatus, r.path, r.msg = map[int]int{}, f["path"], f["error"]
		r.since, _ = time.Parse(time.RFC3339, f["since"])
	}
	for _, kv := range strings.Fields(f["statuses"]) {
		st, n, _ := strings.Cut(kv, ":")
		code, _ := strconv.Atoi(st)
		count, _ := strconv.Atoi(n)
		r.byStatus[code] += count
	}
}
