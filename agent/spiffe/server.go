// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/northstar-oci/northstar/agent/identity"
)

// SocketName is the Workload API socket's name in a container's API
// directory: /run/northstar/api/spiffe.sock inside the container.
const SocketName = "spiffe.sock"

// Bounds of one container's socket (DESIGN.md §11: every bound is per
// caller). An application holds one or two streams (go-spiffe's
// X509Source one, its JWTSource one): these leave room for a few of them
// in a container and no more.
const (
	// MaxConns is the most connections open at once on one socket unless
	// Config.Conns says otherwise (the HTTP API's [api] max_connections):
	// more wait in the socket's backlog, costing the agent nothing, until
	// one closes.
	MaxConns = 16
	// MaxStreams is the most streams (FetchX509SVID, FetchX509Bundles,
	// FetchJWTBundles) open at once on one socket, over all its
	// connections; more are refused with ResourceExhausted.
	MaxStreams = 16
	// MaxStreamsPerConn is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS.
	MaxStreamsPerConn = 8
	// MaxRequest bounds a request message, as api.MaxBody bounds an HTTP
	// body.
	MaxRequest = 64 << 10
	// MaxHeaders bounds a request's header list.
	MaxHeaders = 16 << 10
	// MaxAudiences and MaxAudience bound FetchJWTSVID's audience list.
	MaxAudiences = 16
	MaxAudience  = 255
)

// Auditor records events in the agent's audit log; it never receives a
// key or a token. agent/api's Agent has the same method. What it cannot
// record does not happen: an SVID whose line fails is not handed out.
type Auditor interface {
	Audit(event string, fields map[string]string) error
}

// Limiter bounds how often one container may call: the token bucket of
// the container's HTTP API socket (api.Server.Take), shared, so that a
// container has one budget whichever API it uses.
type Limiter interface {
	// Take reports whether one more call may start now, and if not,
	// after how long one may; over the rate it may hold the caller a
	// while first (until ctx ends at the latest), as the HTTP API does.
	Take(ctx context.Context) (ok bool, retryAfter time.Duration)
}

// Config is what a Server needs.
type Config struct {
	// Issuer is where the SVIDs come from (the Server closes it, if it
	// has a Close method); nil: the local CA, CA, with the lifetimes
	// below.
	Issuer    Issuer
	CA        *CA
	Lifecycle Lifecycle
	Audit     Auditor
	Limiter   Limiter
	// X509TTL and JWTTTL are the local CA's SVIDs' lifetimes ([spiffe]
	// x509_svid_ttl, jwt_svid_ttl).
	X509TTL, JWTTTL time.Duration
	// Refused, if set, is told of each refused call, with the HTTP
	// equivalent of its gRPC code: the registry counts them into the
	// container's aggregated refusal line (api.Server.CountRefusal), as
	// the HTTP API's own; a line per refusal would let a container fill
	// the log.
	Refused func(method string, status int, reason string)
	// Conns caps the socket's open connections (0: MaxConns).
	Conns int
	// Revoked, if set, reports whether a JWT-SVID for id issued at
	// issued is of a sender revoked since (northstarctl rotate
	// --revoke): it validates as revoked, like the agent's tokens.
	Revoked func(id spiffeid.ID, issued time.Time) bool
	// Log takes the one line of a handler that panicked (nil: dropped).
	Log io.Writer
	// Federated, if set, are other trust domains' bundles to hand out.
	Federated Federated

	now func() time.Time // tests
}

// Server is the SPIFFE Workload API of one container: a gRPC server on
// that container's socket, for that container's identity alone.
type Server struct {
	cfg      Config
	identity string
	id       spiffeid.ID // the local CA's SPIFFE ID of identity (zero with another issuer)
	grpc     *grpc.Server
	streams  chan struct{} // a slot per open stream, MaxStreams
	closed   chan struct{}
	close    sync.Once

	validMu   sync.Mutex      // guards validated
	validated map[string]bool // jwt ids audited as valid on this socket
}

// maxValidated bounds the memory of audited validations: when full it
// starts again (a JWT-SVID then gets a second line, no more often).
const maxValidated = 1024

// firstValidation reports whether JWT-SVID jti was not audited as valid
// on this socket yet, and remembers it. An empty jti is always first.
func (s *Server) firstValidation(jti string) bool {
	if jti == "" {
		return true
	}
	s.validMu.Lock()
	defer s.validMu.Unlock()
	if s.validated[jti] {
		return false
	}
	if s.validated == nil || len(s.validated) >= maxValidated {
		s.validated = map[string]bool{}
	}
	s.validated[jti] = true
	return true
}

func (s *Server) forgetValidation(jti string) {
	s.validMu.Lock()
	defer s.validMu.Unlock()
	delete(s.validated, jti)
}

// NewServer returns the Workload API server of the container whose
// identity is ident: its SPIFFE ID is spiffe://<trust domain><path>, the
// path identity.SPIFFEPath maps ident to.
func NewServer(ident string, cfg Config) (*Server, error) {
	if cfg.Issuer == nil && cfg.CA == nil || cfg.Lifecycle == nil || cfg.Audit == nil || cfg.Limiter == nil {
		return nil, errors.New("spiffe server: issuer (or CA), lifecycle, audit and limiter are all required")
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.Conns <= 0 {
		cfg.Conns = MaxConns
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	s := &Server{cfg: cfg, identity: ident, streams: make(chan struct{}, MaxStreams), closed: make(chan struct{})}
	if cfg.Issuer == nil {
		if cfg.X509TTL <= 0 || cfg.JWTTTL <= 0 {
			return nil, errors.New("spiffe server: SVID lifetimes must be positive")
		}
		local, err := NewLocal(cfg.CA, ident, cfg.Lifecycle, cfg.X509TTL, cfg.JWTTTL)
		if err != nil {
			return nil, err
		}
		local.now, local.federated = cfg.now, cfg.Federated
		s.cfg.Issuer, s.id = local, local.ID()
	}
	s.grpc = grpc.NewServer(
		grpc.ForceServerCodecV2(zeroingCodec{}),
		// Frames go straight from the zeroing codec's buffer to the
		// socket (see zeroingCodec).
		grpc.WriteBufferSize(0),
		grpc.ReadBufferSize(4<<10), // requests are small; a connection's share of memory stays small too
		grpc.MaxRecvMsgSize(MaxRequest),
		grpc.MaxHeaderListSize(MaxHeaders),
		grpc.MaxConcurrentStreams(MaxStreamsPerConn),
		// A connection that never finishes the HTTP/2 handshake is closed.
		grpc.ConnectionTimeout(5*time.Second),
		// One without streams goes after a while: clients reconnect (§4.2).
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute}),
		// Close waits for every handler to return: a handler then never
		// runs on after what it uses is let go (a revocation dropped the
		// container's HTTP server while the Workload API's refusal
		// callback still called it, and the panic took the agent down).
		grpc.WaitForHandlers(true),
		// The recovery first, so that it covers the rest: gRPC does not
		// recover a handler's panic, and one would end the agent for
		// every container.
		grpc.ChainUnaryInterceptor(s.recoverUnary, s.unary),
		grpc.ChainStreamInterceptor(s.recoverStream, s.stream),
	)
	workload.RegisterSpiffeWorkloadAPIServer(s.grpc, &handler{s: s})
	return s, nil
}

// ID is the SPIFFE ID the server issues SVIDs for under the local CA
// (zero with another Issuer, whose entries name the IDs).
func (s *Server) ID() spiffeid.ID { return s.id }

// LocalID is the SPIFFE ID the local CA of td gives identity ident:
// spiffe://<td><path>, the path identity.SPIFFEPath maps ident to.
func LocalID(td spiffeid.TrustDomain, ident string) (spiffeid.ID, error) {
	path, err := identity.SPIFFEPath(ident)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe server: %w", err)
	}
	id, err := spiffeid.FromPath(td, path)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe server: spiffe id of %q: %w", ident, err)
	}
	return id, nil
}

// Serve serves ln (at most Config.Conns connections at once) until Close.
func (s *Server) Serve(ln net.Listener) error {
	err := s.grpc.Serve(netutil.LimitListener(ln, s.cfg.Conns))
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close ends every stream and connection and closes the listener: the
// container is gone, or its socket is being replaced. It returns once
// every handler has returned (streams and calls held in the rate's
// tarpit end with their context), so that the caller may then let go of
// what the handlers use. An Issuer with a Close method (SPIRE's, whose
// stream is the container's) is closed too, once no handler uses it.
func (s *Server) Close() {
	s.close.Do(func() {
		close(s.closed)
		s.grpc.Stop()
		if c, ok := s.cfg.Issuer.(interface{ Close() }); ok {
			c.Close()
		}
	})
}

// errPanic answers a call whose handler panicked: it costs that call
// alone.
var errPanic = status.Error(codes.Internal, "internal error")

// recovered turns a panic of a handler into errPanic and one line in the
// agent's log.
func (s *Server) recovered(method string, err *error) {
	if v := recover(); v != nil {
		fmt.Fprintf(s.cfg.Log, "agent: spiffe: %s for %s panicked (the call failed, the agent serves on): %v\n", method, s.identity, v)
		*err = errPanic
	}
}

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (resp any, err error) {
	defer s.recovered(info.FullMethod, &err)
	return next(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) (err error) {
	defer s.recovered(info.FullMethod, &err)
	return next(srv, ss)
}

func (s *Server) refused(method string, err error) error {
	if s.cfg.Refused != nil {
		st := status.Convert(err)
		s.cfg.Refused(method, httpStatus(st.Code()), st.Message())
	}
	return err
}

// httpStatus is the HTTP equivalent of a refusal's code, as gRPC's
// HTTP mapping has it, for the container's one refusal count.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// The Workload API spec's error codes (and SPIRE's messages where it has
// one), at this one edge: InvalidArgument for a request without the
// security header or with a mandatory field empty, PermissionDenied for
// an identity the caller does not have, Unavailable when the agent cannot
// issue now (the client retries after a backoff), and ResourceExhausted
// for a caller over its bounds.
var (
	errNoHeader   = status.Error(codes.InvalidArgument, "security header missing from request")
	errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")
	errNoAudit    = status.Error(codes.Unavailable, "the agent cannot record this in its audit log; try again later")
)

// admit checks what every call must pass: the security header (Workload
// Endpoint spec §4: metadata workload.spiffe.io: true, so that a browser
// or a confused proxy cannot make the call), then the container's rate.
func (s *Server) admit(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return s.refused(method, errNoHeader)
	}
	if ok, after := s.cfg.Limiter.Take(ctx); !ok {
		secs := max(1, int64((after+time.Second-1)/time.Second))
		_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after", strconv.FormatInt(secs, 10)))
		return s.refused(method, status.Errorf(codes.ResourceExhausted, "too many requests from this container; retry after %ds", secs))
	}
	return nil
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := s.admit(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	resp, err := next(ctx, req)
	if c := status.Code(err); c == codes.InvalidArgument || c == codes.PermissionDenied {
		s.refused(info.FullMethod, err)
	}
	return resp, err
}

func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if err := s.admit(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		return s.refused(info.FullMethod, status.Errorf(codes.ResourceExhausted, "too many open streams on this socket (at most %d)", MaxStreams))
	}
	return next(srv, ss)
}
