package spiffe

import (
	"context"
	"maps"
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

// FetchX509SVID streams the container's X.509-SVID: one at once (§4.3:
// the first message without delay), and a newly issued one, each with a
// key of its own, at half of the last one's lifetime and at every rotation
// of the lifecycle secret, until the client goes or the container does.
// Every message is the full state: the one SVID and the bundle.
func (h *handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	s := h.s
	ctx := stream.Context()
	for {
		gen, rotated := s.cfg.Lifecycle.Generation()
		federated, fedChanged := s.federated()
		svid, err := s.cfg.CA.IssueX509(s.id, s.cfg.now(), s.cfg.X509TTL)
		if err != nil {
			return status.Error(codes.Unavailable, "could not issue an x509-svid")
		}
		resp := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId:    s.id.String(),
			X509Svid:    svid.Cert,
			X509SvidKey: svid.Key(),
			Bundle:      s.cfg.CA.Certificate().Raw,
		}}, FederatedBundles: federated}
		// What the audit log cannot record is not handed out.
		if err := s.cfg.Audit.Audit("spiffe-x509-issued", map[string]string{
			"identity": s.identity, "spiffe_id": s.id.String(), "serial": svid.Serial,
			"not_after": svid.NotAfter.UTC().Format(time.RFC3339), "generation": strconv.FormatUint(gen, 10)}); err != nil {
			svid.Zero()
			return errNoAudit
		}
		// Send marshals (into a buffer the codec zeroes once written) before
		// it returns: the key is the container's alone from here on.
		err = stream.Send(resp)
		svid.Zero()
		resp.Svids[0].X509SvidKey = nil
		if err != nil {
			return err
		}
		renew := time.NewTimer(time.Until(svid.NotAfter.Add(-svid.Lifetime / 2)))
		select {
		case <-renew.C:
		case <-rotated:
			renew.Stop()
		case <-fedChanged:
			renew.Stop()
		case <-ctx.Done():
			renew.Stop()
			return nil
		case <-s.closed:
			renew.Stop()
			return status.Error(codes.Unavailable, "the container's socket is closing")
		}
	}
}

// FetchX509Bundles streams the trust domain's X.509 bundle, the CA
// certificate, which does not change while the agent runs (see CA), and
// the federated trust domains' bundles, again at each of their changes.
func (h *handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	s := h.s
	td := s.cfg.CA.TrustDomain().IDString()
	for {
		federated, changed := s.federated()
		bundles := map[string][]byte{td: s.cfg.CA.Certificate().Raw}
		maps.Copy(bundles, federated)
		if err := stream.Send(&workload.X509BundlesResponse{Bundles: bundles}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		case <-s.closed:
			return status.Error(codes.Unavailable, "the container's socket is closing")
		}
	}
}

// FetchJWTBundles streams the trust domain's JWT bundle, a JWK Set of the
// JWT-SVID signing key, which does not change while the agent runs.
func (h *handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	s := h.s
	td := s.cfg.CA.TrustDomain().IDString()
	if err := stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{td: s.cfg.CA.JWKS()}}); err != nil {
		return err
	}
	return h.wait(stream.Context())
}

// wait holds a bundle stream open until the client or the socket goes.
func (h *handler) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-h.s.closed:
		return status.Error(codes.Unavailable, "the container's socket is closing")
	}
}

// FetchJWTSVID issues a JWT-SVID of the container's identity for the
// audiences asked (§6.2.1). A request for another SPIFFE ID is refused:
// the caller has one identity, the socket's.
func (h *handler) FetchJWTSVID(_ context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	s := h.s
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if err := checkAudiences(req.Audience); err != nil {
		return nil, err
	}
	if req.SpiffeId != "" {
		want, err := spiffeid.FromString(req.SpiffeId)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, "invalid requested SPIFFE ID")
		}
		if want != s.id {
			return nil, errNoIdentity
		}
	}
	svid, err := s.cfg.CA.SignJWT(s.id, req.Audience, s.cfg.now(), s.cfg.JWTTTL)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "could not issue a jwt-svid")
	}
	gen, _ := s.cfg.Lifecycle.Generation()
	if err := s.cfg.Audit.Audit("spiffe-jwt-issued", map[string]string{
		"identity": s.identity, "spiffe_id": s.id.String(), "audience": strings.Join(req.Audience, " "),
		"expires": svid.Expiry.UTC().Format(time.RFC3339), "jwt_id": svid.JTI, "generation": strconv.FormatUint(gen, 10)}); err != nil {
		return nil, errNoAudit
	}
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: s.id.String(), Svid: svid.Token}}}, nil
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
// this trust domain's bundle, for the audience the caller names. Unlike
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
	svid, err := s.cfg.CA.ValidateJWT(req.Svid, req.Audience)
	if err != nil {
		fields["result"] = "invalid"
		fields["reason"] = err.Error()
		if err := s.cfg.Audit.Audit("spiffe-jwt-validated", fields); err != nil {
			return nil, errNoAudit
		}
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
	if err := s.cfg.Audit.Audit("spiffe-jwt-validated", fields); err != nil {
		return nil, errNoAudit
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
