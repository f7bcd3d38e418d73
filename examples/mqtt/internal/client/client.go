// SPDX-License-Identifier: Apache-2.0

// Package client is the example MQTT client of examples/mqtt: it connects
// to the broker (MQTT 5, eclipse/paho.golang) with a northstar token, with
// its X.509-SVID over mutual TLS, or with the lifecycle secret as its
// password, subscribes to a topic, publishes a message to it and waits for
// that message to come back.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/northstar-oci/northstar/client"
	northstar "github.com/northstar-oci/northstar/client"
)

// ErrUsage marks a command-line error (exit code 2).
var ErrUsage = errors.New("usage")

// RefusedError is returned when the broker answers the CONNECT with an
// error reason code (exit code 3).
type RefusedError struct {
	Code   byte   // MQTT 5 CONNACK reason code, >= 0x80
	Reason string // the broker's optional reason string
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("refused by broker: %s (0x%02x)", reasonText(e.Code), e.Code)
	if e.Reason != "" {
		s += ": " + quoteIfOdd(e.Reason)
	}
	return s
}

// reasonText is the name of a CONNACK reason code, e.g. "Bad User Name or
// Password" for 0x86: paho's description up to its " - ".
func reasonText(code byte) string {
	r := (&packets.Connack{ReasonCode: code}).Reason()
	if name, _, ok := strings.Cut(r, " - "); ok {
		return name
	}
	if r == "" {
		return "unknown reason code"
	}
	return r
}

// Config is one round trip.
type Config struct {
	Broker   string // host:port
	ClientID string
	Username string // sent when non-empty
	// Password is sent when SendPassword is set (an empty password is then
	// still sent, with the password flag on).
	Password     []byte
	SendPassword bool
	Topic        string
	Message      []byte
	Timeout      time.Duration // for the whole exchange
	// TLS, if set, is the TLS configuration of the connection (--auth
	// mtls: the client's SVID and the broker's expected SPIFFE ID).
	TLS *tls.Config
}

// Result is a successful round trip.
type Result struct {
	Topic string
	// RoundTrip is the time from sending the PUBLISH to receiving it back.
	RoundTrip time.Duration
}

// RoundTrip connects, subscribes to cfg.Topic, publishes cfg.Message (QoS 1)
// and waits for it to come back, all within cfg.Timeout. The message is
// recognised by a random correlation id, so clients sharing a topic do not
// take each other's messages for their own.
func RoundTrip(ctx context.Context, cfg Config) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	var conn net.Conn
	var err error
	if cfg.TLS != nil {
		conn, err = dialTLS(ctx, cfg.Broker, cfg.TLS)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", cfg.Broker)
	}
	if err != nil {
		return Result{}, fmt.Errorf("connect to %s: %w", cfg.Broker, err)
	}
	defer conn.Close() // paho closes it too; a second Close is harmless

	received := make(chan *paho.Publish, 8)
	lost := make(chan error, 1)
	c := paho.NewClient(paho.ClientConfig{
		// paho writes a packet as several buffers (net.Buffers) and writes
		// from more than one goroutine: its pinger sends the first PINGREQ
		// the moment the CONNACK is in, while we send the SUBSCRIBE. Over
		// TCP a packet's buffers leave in one writev; over TLS each buffer
		// is a Write, a record, of its own, so without a lock the PINGREQ
		// lands inside the SUBSCRIBE or PUBLISH and the broker drops the
		// connection ("malformed packet: topic"). The lock makes every
		// packet's Writes one unit, as paho's ClientConfig.Conn asks.
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case received <- pr.Packet:
				default: // someone else's traffic flooding us; ours will be retried by the loop below
				}
				return true, nil
			},
		},
		OnClientError: func(err error) {
			select {
			case lost <- err:
			default:
			}
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case lost <- fmt.Errorf("broker disconnected us: reason code 0x%02x", d.ReasonCode):
			default:
			}
		},
	})

	receiveMax := uint16(8) // paho allocates a channel of this size
	cp := &paho.Connect{
		ClientID:     cfg.ClientID,
		KeepAlive:    30,
		CleanStart:   true,
		Username:     cfg.Username,
		UsernameFlag: cfg.Username != "",
		Password:     cfg.Password,
		PasswordFlag: cfg.SendPassword,
		Properties:   &paho.ConnectProperties{ReceiveMaximum: &receiveMax},
	}
	ca, err := c.Connect(ctx, cp)
	if ca != nil && ca.ReasonCode >= packets.ConnackUnspecifiedError {
		rerr := &RefusedError{Code: ca.ReasonCode}
		if ca.Properties != nil {
			rerr.Reason = ca.Properties.ReasonString
		}
		return Result{}, rerr
	}
	if err != nil {
		return Result{}, fmt.Errorf("mqtt connect to %s: %w", cfg.Broker, err)
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) }()

	if _, err := c.Subscribe(ctx, &paho.Subscribe{
		Subscriptions: []paho.SubscribeOptions{{Topic: cfg.Topic, QoS: 1}},
	}); err != nil {
		return Result{}, fmt.Errorf("subscribe to %q: %w", cfg.Topic, err)
	}

	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
	start := time.Now()
	if _, err := c.Publish(ctx, &paho.Publish{
		Topic:      cfg.Topic,
		QoS:        1,
		Payload:    cfg.Message,
		Properties: &paho.PublishProperties{CorrelationData: nonce},
	}); err != nil {
		return Result{}, fmt.Errorf("publish to %q: %w", cfg.Topic, err)
	}
	for {
		select {
		case p := <-received:
			if p.Topic == cfg.Topic && p.Properties != nil && bytes.Equal(p.Properties.CorrelationData, nonce) {
				return Result{Topic: cfg.Topic, RoundTrip: time.Since(start)}, nil
			}
		case err := <-lost:
			return Result{}, fmt.Errorf("connection lost: %w", err)
		case <-ctx.Done():
			return Result{}, fmt.Errorf("message did not come back within %s: %w", cfg.Timeout, ctx.Err())
		}
	}
}

// dialTLS connects with conf and waits for the broker's verdict on the
// client's certificate. In TLS 1.3 a client's handshake is over before the
// server has checked the client's certificate: the server says no with an
// alert afterwards, and a CONNECT sent meanwhile may meet a broken pipe,
// the alert lost. So dialTLS reads until the broker's first session ticket
// (which it sends only once it accepted the certificate) or its alert; a
// server that sends no tickets costs a second's wait.
func dialTLS(ctx context.Context, addr string, conf *tls.Config) (net.Conn, error) {
	conf = conf.Clone()
	ticket := &ticketWatch{got: make(chan struct{})}
	conf.ClientSessionCache = ticket
	c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	if tc.ConnectionState().Version < tls.VersionTLS13 {
		return tc, nil // the server's verdict was part of the handshake
	}
	read := make(chan error, 1)
	go func() {
		_, err := tc.Read(make([]byte, 1)) // handles the ticket, waits for data that does not come
		read <- err
	}()
	noTicket := time.NewTimer(time.Second)
	defer noTicket.Stop()
	select {
	case <-ticket.got:
	case <-noTicket.C:
	case err := <-read:
		tc.Close()
		if err == nil {
			err = errors.New("the broker spoke before the client")
		}
		return nil, err
	case <-ctx.Done():
		tc.Close()
		<-read
		return nil, ctx.Err()
	}
	// The read ends with a timeout, which leaves the connection usable:
	// crypto/tls records only errors that are not Temporary as the
	// connection's permanent error, a deadline's is Temporary, and bytes of
	// a record read so far stay buffered for the next Read.
	_ = tc.SetReadDeadline(time.Now())
	if err := <-read; !errors.Is(err, os.ErrDeadlineExceeded) {
		tc.Close()
		if err == nil {
			err = errors.New("the broker spoke before the client")
		}
		return nil, err
	}
	_ = tc.SetReadDeadline(time.Time{})
	return tc, nil
}

// ticketWatch is a session cache that keeps nothing and notices the first
// ticket.
type ticketWatch struct {
	once sync.Once
	got  chan struct{}
}

func (*ticketWatch) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (w *ticketWatch) Put(string, *tls.ClientSessionState)      { w.once.Do(func() { close(w.got) }) }

// Run is the client command. On success it prints one line to stdout,
// "client: authenticated, round trip ok (topic T, N ms)", and returns nil;
// otherwise it returns the error (main prints "client: <error>" to stderr
// and exits with ExitCode(err)).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "127.0.0.1:1883", "broker `host:port`")
	clientID := fs.String("client-id", "", "MQTT client `id` (default: \"client-\" and 8 random hex digits)")
	auth := fs.String("auth", "token", "how to log in: `token` (username = this container's identity, password = a northstar token for the broker), mtls (username = this container's identity, its X.509-SVID as the TLS client certificate) or secret (password = the lifecycle secret)")
	audience := fs.String("audience", "broker", "the broker's northstar `identity` (--auth token: the token's audience; --auth mtls: the only identity the broker's certificate may have, or its whole SPIFFE ID for a broker of another, federated, trust domain)")
	apiSocket := fs.String("api-socket", northstar.DefaultSocket, "the northstar API `socket` (--auth token)")
	spiffeSocket := fs.String("spiffe-socket", "", "the SPIFFE Workload API `address` (--auth mtls; default $SPIFFE_ENDPOINT_SOCKET, else "+northstar.DefaultSPIFFEEndpoint+")")
	noCert := fs.Bool("no-certificate", false, "--auth mtls without a client certificate, and without checking the broker's (tests of outsiders)")
	replay := fs.Bool("replay", false, "log in a second time with the same token, as someone who captured it would; succeed only if the broker refuses it")
	username := fs.String("username", "", "MQTT `username` (default: the identity with --auth token, \"northstar\" with --auth secret; \"\" sends none)")
	secretPath := fs.String("secret-file", client.DefaultSecretPath, "`file` holding the lifecycle secret, sent as the password")
	password := fs.String("password", "", "send this `password` instead of the secret file's (tests of outsiders only: it shows in argv)")
	noPassword := fs.Bool("no-password", false, "send no password at all (tests of outsiders)")
	topic := fs.String("topic", "northstar/demo", "`topic` to subscribe and publish to (no wildcards)")
	message := fs.String("message", "hello from a northstar container", "message `payload`")
	timeout := fs.Duration("timeout", 5*time.Second, "time allowed for connect, subscribe, publish and receive")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: client [flags]\n\n"+
			"Connects to the broker with the lifecycle secret as password, publishes a message and waits for it to come back.\n"+
			"Exit status: 0 round trip ok, 1 failure, 2 usage, 3 refused by the broker.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	passwordSet := false
	fs.Visit(func(f *flag.Flag) { passwordSet = passwordSet || f.Name == "password" })
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	case passwordSet && *noPassword:
		return fmt.Errorf("%w: --password and --no-password exclude each other", ErrUsage)
	case *timeout <= 0:
		return fmt.Errorf("%w: --timeout must be positive", ErrUsage)
	case *topic == "" || strings.ContainsAny(*topic, "+#"):
		return fmt.Errorf("%w: --topic must be a non-empty topic name without wildcards", ErrUsage)
	}

	usernameSet := false
	fs.Visit(func(f *flag.Flag) { usernameSet = usernameSet || f.Name == "username" })
	cfg := Config{
		Broker:   *broker,
		ClientID: *clientID,
		Username: *username,
		Topic:    *topic,
		Message:  []byte(*message),
		Timeout:  *timeout,
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "client-" + randomHex(4)
	}
	api := northstar.New(*apiSocket)
	if *noCert && *auth != "mtls" {
		return fmt.Errorf("%w: --no-certificate is for --auth mtls", ErrUsage)
	}
	if *auth == "mtls" {
		who, done, err := mtls(ctx, &cfg, *spiffeSocket, *audience, *noCert)
		if err != nil {
			return err
		}
		defer done()
		if !usernameSet {
			cfg.Username, usernameSet = who, true
		}
	}
	switch {
	case *auth != "token" && *auth != "secret" && *auth != "mtls":
		return fmt.Errorf("%w: --auth %q: want token, mtls or secret", ErrUsage, *auth)
	case *noPassword, *auth == "mtls" && !passwordSet:
	case passwordSet:
		cfg.Password, cfg.SendPassword = []byte(*password), true
	case *auth == "token":
		tok, err := api.Token(ctx, *audience, "mqtt", time.Minute)
		if err != nil {
			return fmt.Errorf("get a token for %s: %w", *audience, err)
		}
		cfg.Password, cfg.SendPassword = []byte(tok.Token), true
	default:
		secret, err := client.ReadSecret(*secretPath)
		if err != nil {
			return err
		}
		cfg.Password, cfg.SendPassword = secret.Password(), true
		secret.Zero()
	}
	if !usernameSet {
		cfg.Username = "northstar"
		if *auth == "token" {
			id, err := api.Identity(ctx)
			if err != nil {
				return fmt.Errorf("ask the northstar API who we are: %w", err)
			}
			cfg.Username = id.Identity
		}
	}
	res, err := RoundTrip(ctx, cfg)
	if err == nil && *replay {
		// The same token again, as someone who captured it would send it.
		cfg.ClientID += "-replay"
		_, rerr := RoundTrip(ctx, cfg)
		var refusedErr *RefusedError
		if !errors.As(rerr, &refusedErr) {
			clear(cfg.Password)
			return fmt.Errorf("the replayed token was not refused: %v", rerr)
		}
		fmt.Fprintf(stdout, "client: the replayed token was refused: %v\n", rerr)
	}
	clear(cfg.Password)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "client: authenticated, round trip ok (topic %s, %d ms)\n", res.Topic, res.RoundTrip.Milliseconds())
	return nil
}

// ExitCode maps Run's error to the process exit status: 0 ok, 1 failure,
// 2 usage, 3 refused by the broker.
func ExitCode(err error) int {
	var refused *RefusedError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	case errors.As(err, &refused):
		return 3
	default:
		return 1
	}
}

// mtls sets up cfg.TLS for --auth mtls: go-spiffe's mutual TLS with this
// container's X.509-SVID from the Workload API at addr, accepting only a
// broker whose SVID is broker's SPIFFE ID. It returns this container's
// identity, the username the broker expects, and done, which closes the
// source once the connections are over. With noCert it is an outsider's
// TLS: no certificate, the broker's not checked, and username "northstar".
func mtls(ctx context.Context, cfg *Config, addr, broker string, noCert bool) (who string, done func(), err error) {
	if noCert {
		cfg.TLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // an outsider has no bundle either
		return "northstar", func() {}, nil
	}
	if addr == "" {
		addr = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if addr == "" {
		addr = northstar.DefaultSPIFFEEndpoint
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	path, err := northstar.SPIFFEPath(broker)
	if _, idErr := spiffeid.FromString(broker); err != nil && idErr != nil {
		return "", nil, fmt.Errorf("%w: --audience %q is neither a northstar identity nor a SPIFFE ID", ErrUsage, broker)
	}
	src, err := workloadapi.NewX509Source(sctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return "", nil, fmt.Errorf("X.509-SVID from the SPIFFE Workload API at %s: %w", addr, err)
	}
	done = func() { _ = src.Close() }
	svid, err := src.GetX509SVID()
	if err == nil {
		if who, err = northstar.IdentityOfSPIFFEPath(svid.ID.Path()); err != nil {
			err = fmt.Errorf("our SPIFFE ID %s is not a northstar identity's", svid.ID)
		}
	}
	var brokerID spiffeid.ID
	switch {
	case err != nil:
	case strings.HasPrefix(broker, "spiffe://"): // a broker of a federated trust domain
		brokerID, err = spiffeid.FromString(broker)
	default:
		brokerID, err = spiffeid.FromPath(svid.ID.TrustDomain(), path)
	}
	if err != nil {
		done()
		return "", nil, fmt.Errorf("X.509-SVID: %w", err)
	}
	cfg.TLS = tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(brokerID))
	cfg.TLS.MinVersion = tls.VersionTLS12
	return who, done, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// quoteIfOdd quotes broker-chosen text that could garble the output line.
func quoteIfOdd(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || r == '"' }) {
		return fmt.Sprintf("%q", s)
	}
	return s
}
