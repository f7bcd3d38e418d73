// SPDX-License-Identifier: Apache-2.0

package spiffe

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// handler implements the Workload API (the Workload API spec, §5 and §6)
// for its server's one identity. WIT-SVIDs (§7, optional) are not
// implemented: the embedded Unimplemented answers Unimplemented, which the
// spec asks for, and on which go-spiffe stops asking.
type handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	s *Server
}

var _ workload.SpiffeWorkloadAPIServer = (*handler)(nil)

// FetchX509SVID streams the container's X.509-SVIDs as its Issuer has
// them: at once (§4.3: the first message without delay), and again when
// they change (the local CA: a new one, with a key of its own, at half of
// the last one's lifetime and at every rotation of the lifecycle secret;
// SPIRE: when it rotates them or the entries change), until the client
// goes or the container does. Every message is the full state.
func (h *handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	s := h.s
	ctx := stream.Context()
	for {
		gen, _ := s.cfg.Lifecycle.Generation()
		fedChanged := s.federatedChanged() // before the bundles are read
		u, err := s.cfg.Issuer.X509SVIDs()
		if err != nil {
			return unavailable("could not issue an x509-svid", err)
		}
		if len(u.SVIDs) == 0 {
			return errNoIdentity
		}
		resp := &workload.X509SVIDResponse{FederatedBundles: u.FederatedBundles}
		for _, svid := range u.SVIDs {
			resp.Svids = append(resp.Svids, &workload.X509SVID{
				SpiffeId:    svid.ID.String(),
				X509Svid:    svid.Cert,
				X509SvidKey: svid.Key(),
				Bundle:      u.Bundle,
				Hint:        svid.Hint,
			})
			// What the audit log cannot record is not handed out.
			if err := s.cfg.Audit.Audit("spiffe-x509-issued", map[string]string{
				"identity": s.identity, "spiffe_id": svid.ID.String(), "serial": svid.Serial,
				"not_after": svid.NotAfter.UTC().Format(time.RFC3339), "generation": strconv.FormatUint(gen, 10)}); err != nil {
				u.Zero()
				return errNoAudit
			}
		}
		// Send marshals (into a buffer the codec zeroes once written) before
		// it returns: the keys are the container's alone from here on.
		err = stream.Send(resp)
		u.Zero()
		for _, svid := range resp.Svids {
			svid.X509SvidKey = nil
		}
		if err != nil {
			return err
		}
		var renew <-chan time.Time
		t := time.NewTimer(time.Until(u.Renew))
		if !u.Renew.IsZero() {
			renew = t.C
		}
		select {
		case <-renew:
		case <-u.Changed:
		case <-fedChanged:
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.closed:
			t.Stop()
			return status.Error(codes.Unavailable, "the container's socket is closing")
		}
		t.Stop()
	}
}

// unavailable is the Unavailable answer to an Issuer's error: the
// Issuer's words when it says to retry (SPIRE does not answer), what
// failed otherwise.
func unavailable(what string, err error) error {
	if errors.Is(err, ErrUnavailable) {
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unavailable, what)
}

// FetchX509Bundles streams the X.509 bundles: the trust domain's and, from
// SPIRE, those it federates with; a message at every change.
func (h *handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return h.bundles(stream.Context(), "no x509 bundle", h.s.cfg.Issuer.X509Bundles, func(b map[string][]byte) error {
		return stream.Send(&workload.X509BundlesResponse{Bundles: b})
	})
}

// FetchJWTBundles streams the JWT bundles (JWK Sets), as FetchX509Bundles.
func (h *handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return h.bundles(stream.Context(), "no jwt bundle", h.s.cfg.Issuer.JWTBundles, func(b map[string][]byte) error {
		return stream.Send(&workload.JWTBundlesResponse{Bundles: b})
	})
}

// bundles sends what get returns, again at every change, until the client
// or the socket goes.
func (h *handler) bundles(ctx context.Context, what string, get func() (map[string][]byte, <-chan struct{}, error), send func(map[string][]byte) error) error {
	for {
		b, changed, err := get()
		if err != nil {
			return unavailable(what, err)
		}
		if err := send(b); err != nil {
			return err
		}
		if err := h.wait(ctx, changed); err != nil || !h.open(ctx) {
			return err
		}
	}
}

// open reports whether the client is still there.
func (h *handler) open(ctx context.Context) bool { return ctx.Err() == nil }

// wait holds a bundle stream open until the bundles change (a nil
// changed: never), or the client or the socket goes.
func (h *handler) wait(ctx context.Context, changed <-chan struct{}) error {
	select {
	case <-changed:
		return nil
	case <-ctx.Done():
		return nil
	case <-h.s.closed:
		return status.Error(codes.Unavailable, "the container's socket is closing")
	}
}

// FetchJWTSVID issues JWT-SVIDs of the container's identity for the
// audiences asked (§6.2.1): one per SPIFFE ID the issuer gives it, or the
// one asked for. A request for another SPIFFE ID is refused: the caller
// has the identities of its socket alone.
func (h *handler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	s := h.s
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if err := checkAudiences(req.Audience); err != nil {
		return nil, err
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		var err error
		if want, err = spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Error(codes.InvalidArgument, "invalid requested SPIFFE ID")
		}
	}
	svids, err := s.cfg.Issuer.JWTSVIDs(ctx, req.Audience)
	if err != nil {
		return nil, unavailable("could not issue a jwt-svid", err)
	}
	gen, _ := s.cfg.Lifecycle.Generation()
	resp := &workload.JWTSVIDResponse{}
	for _, svid := range svids {
		if !want.IsZero() && svid.ID != want {
			continue
		}
		if err := s.cfg.Audit.Audit("spiffe-jwt-issued", map[string]string{
			"identity": s.identity, "spiffe_id": svid.ID.String(), "audience": strings.Join(req.Audience, " "),
			"expires": svid.Expiry.UTC().Format(time.RFC3339), "jwt_id": svid.JTI, "generation": strconv.FormatUint(gen, 10)}); err != nil {
			return nil, errNoAudit
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: svid.ID.String(), Svid: svid.Token, Hint: svid.Hint})
	}
	if len(resp.Svids) == 0 {
		return nil, errNoIdentity
	}
	return resp, nil
}

// errRevokedSender: the JWT-SVID's subject was revoked after it was
// issued.
var errRevokedSender = errors.New("revoked: its sender was revoked after it was issued")

// issuedAt is a JWT-SVID's iat claim (zero when it has none: then any
// revocation of its subject covers it).
func issuedAt(claims map[string]any) time.Time {
	if v, ok := claims["iat"].(float64); ok {
		return time.Unix(int64(v), 0)
	}
	return time.Time{}
}

// checkAudiences bounds what goes into a token and the audit log: at most
// MaxAudiences, each 1-MaxAudience printable ASCII characters without a
// space (so that the audit line's space-separated list reads back).
func checkAudiences(aud []string) error {
	if len(aud) > MaxAudiences {
		return status.Errorf(codes.InvalidArgument, "at most %d audiences", MaxAudiences)
	}
	for _, a := range aud {
		if len(a) == 0 || len(a) > MaxAudience {
			return status.Errorf(codes.InvalidArgument, "an audience must be 1-%d characters", MaxAudience)
		}
		for i := 0; i < len(a); i++ {
			if a[i] <= ' ' || a[i] > '~' {
				return status.Error(codes.InvalidArgument, "an audience must be printable ASCII without spaces")
			}
		}
	}
	return nil
}

// ValidateJWTSVID validates a JWT-SVID for the caller (§6.2.3): against
// the issuer's JWT bundles, for the audience the caller names. Unlike
// the agent's own tokens, a JWT-SVID is a bearer token for its lifetime:
// it validates as often as it is presented, and anyone with the JWT bundle
// (FetchJWTBundles) can validate it offline.
func (h *handler) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	s := h.s
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if err := checkAudiences([]string{req.Audience}); err != nil {
		return nil, err
	}
	fields := map[string]string{"validator": s.identity, "audience": req.Audience}
	svid, err := s.cfg.Issuer.ValidateJWT(req.Svid, req.Audience)
	if err == nil && s.cfg.Revoked != nil && s.cfg.Revoked(svid.ID, issuedAt(svid.Claims)) {
		err = errRevokedSender
	}
	if err != nil {
		// Counted, not audited one by one: the InvalidArgument goes into
		// the socket's aggregated refusal line (unary), as the HTTP API's
		// refusals do. A line each let a container write 6.4 MB of audit
		// log in 10 s and rotate everyone's history out (DESIGN.md §15).
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	fields["result"] = "valid"
	fields["spiffe_id"] = svid.ID.String()
	if jti, ok := svid.Claims["jti"].(string); ok {
		fields["jwt_id"] = jti
	}
	// RFC 7519 lets a single audience be a string; SPIRE answers a list
	// always, and so do we.
	if aud, ok := svid.Claims["aud"].(string); ok {
		svid.Claims["aud"] = []any{aud}
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "claims of the jwt-svid are not representable")
	}
	// A JWT-SVID validates as often as it is presented: each one is
	// audited once per socket (the first time), so that presenting the
	// same one in a loop writes nothing more.
	if s.firstValidation(fields["jwt_id"]) {
		if err := s.cfg.Audit.Audit("spiffe-jwt-validated", fields); err != nil {
			s.forgetValidation(fields["jwt_id"])
			return nil, errNoAudit
		}
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
