// Package client is the example MQTT client of examples/mqtt: it connects
// to the broker with the northstar lifecycle secret as its password (MQTT 5,
// eclipse/paho.golang), subscribes to a topic, publishes a message to it and
// waits for that message to come back.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

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

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.Broker)
	if err != nil {
		return Result{}, fmt.Errorf("connect to %s: %w", cfg.Broker, err)
	}
	defer conn.Close() // paho closes it too; a second Close is harmless

	received := make(chan *paho.Publish, 8)
	lost := make(chan error, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
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

// Run is the client command. On success it prints one line to stdout,
// "client: authenticated, round trip ok (topic T, N ms)", and returns nil;
// otherwise it returns the error (main prints "client: <error>" to stderr
// and exits with ExitCode(err)).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", "127.0.0.1:1883", "broker `host:port`")
	clientID := fs.String("client-id", "", "MQTT client `id` (default: \"client-\" and 8 random hex digits)")
	auth := fs.String("auth", "token", "how to log in: `token` (username = this container's identity, password = a northstar token for the broker) or secret (password = the lifecycle secret)")
	audience := fs.String("audience", "broker", "the broker's northstar `identity` (--auth token)")
	apiSocket := fs.String("api-socket", northstar.DefaultSocket, "the northstar API `socket` (--auth token)")
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
	switch {
	case *auth != "token" && *auth != "secret":
		return fmt.Errorf("%w: --auth %q: want token or secret", ErrUsage, *auth)
	case *noPassword:
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
