// SPDX-License-Identifier: Apache-2.0

package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/northstar-oci/northstar/client"
)

// mtlsAuthHook lets a client in when the certificate it presented in the
// TLS handshake (an X.509-SVID verified by go-spiffe against the trust
// domain's bundle) names the SPIFFE ID of the identity it gives as its
// username: spiffe://<trust domain><client.SPIFFEPath(username)>.
//
// A client of a federated trust domain (another northstar host, whose
// bundle the broker's SPIFFE source carries) gives its whole SPIFFE ID as
// its username, spiffe://<its trust domain>/<path>, so that it never
// passes for an identity of the broker's own trust domain.
//
// The certificate is the credential: nothing secret crosses the network,
// a recorded connection cannot be replayed, and a container with the same
// lifecycle secret file but another identity holds another certificate.
// The password, if sent, is ignored.
type mtlsAuthHook struct {
	mqtt.HookBase
	td        spiffeid.TrustDomain
	federated map[spiffeid.TrustDomain]bool
	log       *lineWriter
}

var _ mqtt.Hook = (*mtlsAuthHook)(nil)

func (*mtlsAuthHook) ID() string { return "northstar-mtls-auth" }

func (*mtlsAuthHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *mtlsAuthHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	verdict, ok := "accepted", false
	user := string(pk.Connect.Username)
	peer, err := peerID(cl.Net.Conn)
	switch {
	case err != nil:
		verdict = "refused: " + err.Error()
	case user == "":
		verdict = "refused: no username (the identity the certificate must name)"
	default:
		if want, err := h.wantID(user); err != nil {
			verdict = "refused: " + err.Error()
		} else if peer != want {
			verdict = "refused: the certificate is not the username's"
		} else {
			ok = true
		}
	}
	spiffeID := "none"
	if err == nil {
		spiffeID = peer.String()
	}
	h.log.printf("%s client_id=%s username=%s spiffe_id=%s remote=%s",
		verdict, logQuote(cl.ID), logQuote(user), logQuote(spiffeID), cl.Net.Remote)
	return ok
}

func (*mtlsAuthHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// wantID is the SPIFFE ID the client that gives username user must have.
func (h *mtlsAuthHook) wantID(user string) (spiffeid.ID, error) {
	if !strings.HasPrefix(user, "spiffe://") {
		id, err := idOf(h.td, user)
		if err != nil {
			return spiffeid.ID{}, errors.New("the username is not a northstar identity")
		}
		return id, nil
	}
	id, err := spiffeid.FromString(user)
	if err != nil || !h.federated[id.TrustDomain()] {
		return spiffeid.ID{}, errors.New("the username is not a SPIFFE ID of a federated trust domain")
	}
	return id, nil
}

// idOf is the SPIFFE ID of identity ident in td.
func idOf(td spiffeid.TrustDomain, ident string) (spiffeid.ID, error) {
	path, err := client.SPIFFEPath(ident)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromPath(td, path)
}

// peerID is the SPIFFE ID of the certificate the client presented (the
// handshake verified it and its chain).
func peerID(c net.Conn) (spiffeid.ID, error) {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return spiffeid.ID{}, errors.New("not a TLS connection")
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("no client certificate")
	}
	return x509svid.IDFromCert(certs[0])
}

// mtlsListener listens on addr for TLS connections that must present an
// X.509-SVID of td or a federated trust domain (any member: which one may
// log in as whom is the hook's call), with the broker's own SVID from
// source as its certificate.
func mtlsListener(addr string, source *workloadapi.X509Source, td spiffeid.TrustDomain, federated map[spiffeid.TrustDomain]bool, log *lineWriter) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	conf := tlsconfig.MTLSServerConfig(source, source, tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id.MemberOf(td) || federated[id.TrustDomain()] {
			return nil
		}
		return fmt.Errorf("%s is not of trust domain %q nor of a federated one", id, td.Name())
	}))
	conf.MinVersion = tls.VersionTLS12
	return &handshakeListener{Listener: tls.NewListener(ln, conf), log: log}, nil
}

// handshakeListener hands out TLS connections that complete their
// handshake, with a deadline, at the first read (in the connection's own
// goroutine, so a slow client holds up no one else) and log a failed one:
// otherwise an outsider without a certificate would show up only as
// mochi's "connection ended".
type handshakeListener struct {
	net.Listener
	log *lineWriter
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeConn{Conn: c.(*tls.Conn), log: l.log}, nil
}

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 5 * time.Second

type handshakeConn struct {
	*tls.Conn
	log  *lineWriter
	once sync.Once
	err  error
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			c.log.printf("refused: TLS handshake: %s remote=%s", logQuote(err.Error()), c.RemoteAddr())
			c.err = &handshakeError{err}
		}
	})
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// handshakeError is a failed handshake, already logged (mochi's own report
// of the connection is dropped as redundant).
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }
