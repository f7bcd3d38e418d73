// SPDX-License-Identifier: Apache-2.0

// Package spire makes the agent a SPIRE delegate (DESIGN.md §16): it asks
// the host's SPIRE agent, through the Delegated Identity API on its admin
// socket (the way Cilium gets its pods' SVIDs), for each container's SVIDs
// by the selectors the agent asserts for it, and hands them to the
// container's own Workload API socket (package spiffe) as its Issuer.
//
// The SPIRE agent attests the northstar agent itself (an entry for its
// process, listed in the SPIRE agent's authorized_delegates) and issues
// only the SVIDs of entries parented to its node: a compromised host gets
// its own workloads' identities, no one else's. Selectors come from what
// the runtime and the container's creator set, never from the container's
// processes, so there is no PID to look up and no race (SPIRE's own
// workload attestation looks the caller's PID up in /proc).
//
// Nothing here waits for SPIRE on a container's behalf: a Workload
// answers from what its stream last brought, Unavailable until the first
// answer, and its stream reconnects by itself.
package spire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	delegatedidentityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/agent/delegatedidentity/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DefaultAdminSocket is where the SPIRE agent's admin socket is usually
// configured ([spire] admin_socket).
const DefaultAdminSocket = "/run/spire/agent/admin.sock"

// MaxMessage bounds a message from the SPIRE agent: a bundle message
// carries every federated trust domain's CA certificates, which can pass
// gRPC's default 4 MiB (Cilium, cilium#24297, raised its limit so too).
const MaxMessage = 32 << 20

// Backoff bounds between two attempts of a stream that ended.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// HostStatus is what the agent last learnt of the SPIRE agent: whether its
// admin socket answers, and whether it takes this agent as an authorized
// delegate. `northstarctl status` and `doctor` print it.
type HostStatus struct {
	AdminSocket string `json:"admin_socket"`
	Answers     bool   `json:"answers"`
	Delegate    bool   `json:"delegate"`
	// Why says what is wrong, with the fix ("" when both hold).
	Why   string    `json:"why,omitempty"`
	Since time.Time `json:"since"`
}

// Client is the agent's connection to the host's SPIRE agent: the trust
// domain's X.509 and JWT bundles, one stream each for the whole host, and
// the Workloads of the containers. Safe for concurrent use.
type Client struct {
	td      spiffeid.TrustDomain
	socket  string // the admin socket
	conn    *grpc.ClientConn
	api     delegatedidentityv1.DelegatedIdentityClient
	ctx     context.Context
	cancel  context.CancelFunc
	done    sync.WaitGroup
	changed func() // tells the agent to save the statuses

	mu        sync.Mutex // guards what follows
	host      HostStatus
	x509      map[string][]byte // X.509 bundles by trust domain ID; nil until SPIRE answered
	jwt       map[string][]byte // JWT bundles (JWK Sets) so
	jwtSet    *jwtbundle.Set    // jwt, parsed
	bundles   chan struct{}     // closed at the next change of x509 or jwt
	workloads map[*Workload]struct{}
}

// Config is what a Client needs.
type Config struct {
	// AdminSocket is the SPIRE agent's admin socket (absolute path).
	AdminSocket string
	// TrustDomain is the SPIRE server's: SVIDs of another are not served.
	TrustDomain spiffeid.TrustDomain
	// Changed, if set, is called (from the Client's goroutines) when a
	// status changed: the host's or a Workload's.
	Changed func()
}

// New connects to the SPIRE agent's admin socket, lazily: it returns at
// once, and the bundle streams start in the background, as every
// Workload's does.
func New(cfg Config) (*Client, error) {
	if !filepath.IsAbs(cfg.AdminSocket) {
		return nil, fmt.Errorf("spire: admin socket %q is not an absolute path", cfg.AdminSocket)
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("spire: no trust domain")
	}
	// gRPC's unix resolver: "unix:///abs/path" (a relative "unix://run/..."
	// would be taken as an authority).
	conn, err := grpc.NewClient("unix://"+cfg.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage)))
	if err != nil {
		return nil, fmt.Errorf("spire: admin socket %s: %w", cfg.AdminSocket, err)
	}
	if cfg.Changed == nil {
		cfg.Changed = func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{td: cfg.TrustDomain, socket: cfg.AdminSocket, conn: conn, api: delegatedidentityv1.NewDelegatedIdentityClient(conn), ctx: ctx, cancel: cancel,
		changed: cfg.Changed, bundles: make(chan struct{}), workloads: map[*Workload]struct{}{},
		host: HostStatus{AdminSocket: cfg.AdminSocket, Why: "the SPIRE agent has not answered yet", Since: time.Now()}}
	c.done.Add(2)
	go c.run(c.x509Bundles)
	go c.run(c.jwtBundles)
	return c, nil
}

// TrustDomain is the SPIRE server's trust domain.
func (c *Client) TrustDomain() spiffeid.TrustDomain { return c.td }

// Close ends every stream, the Workloads' too, and the connection.
func (c *Client) Close() error {
	c.cancel()
	c.done.Wait()
	return c.conn.Close()
}

// Host returns what the agent last learnt of the SPIRE agent.
func (c *Client) Host() HostStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.host
}

// run runs stream until the Client closes, again after a backoff each time
// it ends. A stream that delivered something starts the backoff over.
func (c *Client) run(stream func(ctx context.Context, answered func()) error) {
	defer c.done.Done()
	backoff := minBackoff
	for {
		err := stream(c.ctx, func() { backoff = minBackoff; c.answered() })
		if c.ctx.Err() != nil {
			return
		}
		c.failed(err)
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// answered records that the SPIRE agent answered this agent as a delegate.
func (c *Client) answered() {
	c.setHost(HostStatus{Answers: true, Delegate: true})
}

// failed records why a host stream ended.
func (c *Client) failed(err error) {
	h := HostStatus{}
	switch st, _ := status.FromError(err); st.Code() {
	case codes.PermissionDenied:
		// The admin socket answered, and refused this agent.
		h.Answers = true
		h.Why = fmt.Sprintf("the SPIRE agent does not take this agent as a delegate (%s): register an entry for the northstar agent (e.g. -selector unix:uid:0) whose SPIFFE ID is in the SPIRE agent's authorized_delegates", st.Message())
	default:
		h.Why = fmt.Sprintf("the SPIRE agent's admin socket does not answer (%s): start the SPIRE agent with admin_socket_path = %q", Describe(err), c.socket)
	}
	c.setHost(h)
}

func (c *Client) setHost(h HostStatus) {
	h.AdminSocket = c.socket
	c.mu.Lock()
	same := h.Answers == c.host.Answers && h.Delegate == c.host.Delegate && h.Why == c.host.Why
	if !same {
		h.Since = time.Now()
		c.host = h
	}
	c.mu.Unlock()
	if !same {
		c.changed()
	}
}

// x509Bundles keeps the X.509 bundles as SPIRE streams them.
func (c *Client) x509Bundles(ctx context.Context, answered func()) error {
	s, err := c.api.SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{})
	if err != nil {
		return err
	}
	return recvAll(s, answered, func(resp *delegatedidentityv1.SubscribeToX509BundlesResponse) {
		c.setBundles(resp.CaCertificates, nil)
	})
}

// jwtBundles keeps the JWT bundles as SPIRE streams them.
func (c *Client) jwtBundles(ctx context.Context, answered func()) error {
	s, err := c.api.SubscribeToJWTBundles(ctx, &delegatedidentityv1.SubscribeToJWTBundlesRequest{})
	if err != nil {
		return err
	}
	return recvAll(s, answered, func(resp *delegatedidentityv1.SubscribeToJWTBundlesResponse) {
		set := jwtbundle.NewSet()
		for id, jwks := range resp.Bundles {
			td, err := spiffeid.TrustDomainFromString(id)
			if err != nil {
				continue // not a trust domain: nothing validates against it
			}
			if b, err := jwtbundle.Parse(td, jwks); err == nil {
				set.Add(b)
			}
		}
		c.setBundles(nil, &jwtState{raw: resp.Bundles, set: set})
	})
}

// recvAll hands every message of s to handle, after answered, until s
// ends.
func recvAll[T any](s interface{ Recv() (T, error) }, answered func(), handle func(T)) error {
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		answered()
		handle(resp)
	}
}

type jwtState struct {
	raw map[string][]byte
	set *jwtbundle.Set
}

// setBundles replaces the X.509 or the JWT bundles and wakes whoever
// waits on them: the containers' bundle streams, and their X.509-SVID
// streams (whose messages carry the bundles).
func (c *Client) setBundles(x509 map[string][]byte, jwt *jwtState) {
	c.mu.Lock()
	if x509 != nil {
		c.x509 = x509
	}
	if jwt != nil {
		c.jwt, c.jwtSet = jwt.raw, jwt.set
	}
	close(c.bundles)
	c.bundles = make(chan struct{})
	ws := slices.Collect(maps.Keys(c.workloads))
	c.mu.Unlock()
	for _, w := range ws {
		w.bump()
	}
}

// errNoBundles is the answer before SPIRE sent the bundles.
var errNoBundles = errors.New("the SPIRE agent has not sent the trust bundles yet")

// Describe is err in a few words: the gRPC status's message, or the error.
func Describe(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return "the stream ended"
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// Probe asks the SPIRE agent at adminSocket for the trust bundles, as the
// agent does, within ctx: nil when it answered this process as an
// authorized delegate; else the error, a gRPC status (PermissionDenied:
// the admin socket answered and refused the caller).
func Probe(ctx context.Context, adminSocket string) error {
	conn, err := grpc.NewClient("unix://"+adminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	s, err := delegatedidentityv1.NewDelegatedIdentityClient(conn).SubscribeToX509Bundles(ctx, &delegatedidentityv1.SubscribeToX509BundlesRequest{})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}
