// SPDX-License-Identifier: Apache-2.0

// Package broker is the example MQTT broker of examples/mqtt: a mochi-mqtt
// server that lets a client in with a northstar token (--auth token, see
// tokenAuthHook), with an X.509-SVID over mutual TLS (--auth mtls, see
// mtlsAuthHook) or with the northstar lifecycle secret. With the secret, a
// client is let in when its CONNECT password is the 64-character secret
// text of the broker's own /run/northstar/secret, read again at every
// login, or, during the grace period after a live rotation, of the one
// before it (secret.previous): containers of the same runtime lifecycle
// hold the same text, so they get in and nobody else does, and a client
// started before a rotation keeps getting in until the grace is over.
//
// Any username is accepted, the empty one included: the secret is the
// credential and the username is only a label that shows up in the log. (MQTT
// 3.1.1 clients must still send some username along with a password: that
// version of the protocol forbids a password without one.)
//
// Every authenticated client may publish and subscribe to every topic.
//
// What this does not defend: the password crosses the network in clear (plain
// TCP, no TLS), so anyone who can watch the traffic between two containers
// learns the secret. That is the demo's scope; a real deployment would put
// the listener behind TLS (mochi's listeners.Config.TLSConfig).
package broker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/northstar-oci/northstar/client"
)

// ErrUsage marks a command-line error (exit code 2).
var ErrUsage = errors.New("usage")

// Config is what Start needs.
type Config struct {
	// Listen is the TCP address to listen on, e.g. ":1883" or "127.0.0.1:0".
	Listen string
	// SecretFile holds the secret every client must present as its
	// password (and, after a live rotation, SecretFile+".previous" the
	// one before it), read at every login. "" with API or SPIFFE set.
	SecretFile string
	// API, instead of SecretFile: clients log in with their identity as
	// username and a northstar token for this broker as password, which
	// the broker verifies on its own API socket.
	API *client.Client
	// SPIFFE, instead of SecretFile and API: the broker listens for TLS only,
	// with its own X.509-SVID from this source, and lets a client in when
	// the SVID the client presents is that of the identity it gives as
	// its username. The caller closes the source after Close.
	SPIFFE *workloadapi.X509Source
	// Federated are other trust domains whose clients SPIFFE lets in
	// (their bundles come from the source: SPIFFE federation); each gives
	// its whole SPIFFE ID as its username.
	Federated []spiffeid.TrustDomain
	// Log receives one line per accepted or refused connection and the
	// broker's own notices. Each line is written with a single Write call;
	// os.Stdout is unbuffered, so lines leave the process as they happen.
	// Never receives the secret or a password.
	Log io.Writer
}

// Broker is a running broker.
type Broker struct {
	srv       *mqtt.Server
	addr      string
	log       *lineWriter
	closeOnce sync.Once
}

// Start listens on cfg.Listen and serves MQTT (3.1.1 and 5) until Close.
func Start(cfg Config) (*Broker, error) {
	if n := btoi(cfg.SecretFile != "") + btoi(cfg.API != nil) + btoi(cfg.SPIFFE != nil); n != 1 {
		return nil, errors.New("start broker: give one of a secret, the northstar API or a SPIFFE source")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	lw := &lineWriter{w: cfg.Log}
	srv := mqtt.New(&mqtt.Options{
		// mochi logs through slog; the handler drops everything below
		// WARN and every attribute that could carry packet contents.
		Logger: slog.New(&mochiHandler{out: lw}),
	})
	var hook mqtt.Hook = &secretAuthHook{path: cfg.SecretFile, log: lw}
	var listener listeners.Listener
	switch {
	case cfg.API != nil:
		hook = &tokenAuthHook{api: cfg.API, log: lw}
	case cfg.SPIFFE != nil:
		svid, err := cfg.SPIFFE.GetX509SVID()
		if err != nil {
			return nil, fmt.Errorf("start broker: own X.509-SVID: %w", err)
		}
		td := svid.ID.TrustDomain()
		fed := map[spiffeid.TrustDomain]bool{}
		for _, f := range cfg.Federated {
			fed[f] = f != td
		}
		hook = &mtlsAuthHook{td: td, federated: fed, log: lw}
		ln, err := mtlsListener(cfg.Listen, cfg.SPIFFE, td, fed, lw)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		listener = listeners.NewNet("tls", ln)
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("add auth hook: %w", err)
	}
	if listener == nil {
		listener = listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Listen})
	}
	if err := srv.AddListener(listener); err != nil { // binds the socket
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if err := srv.Serve(); err != nil { // does not block
		_ = srv.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	b := &Broker{srv: srv, addr: listener.Address(), log: lw}
	if cfg.SPIFFE != nil {
		svid, _ := cfg.SPIFFE.GetX509SVID()
		lw.printf("listening on %s (mutual TLS as %s)", b.addr, svid.ID)
	} else {
		lw.printf("listening on %s", b.addr)
	}
	return b, nil
}

// Addr is the address the broker listens on (with the real port when the
// configured one was 0).
func (b *Broker) Addr() string { return b.addr }

// Close disconnects every client and stops listening. It is safe to call
// more than once.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		_ = b.srv.Close() // always nil in mochi v2.7.9
		b.log.printf("stopped")
	})
}

// Run is the broker command: it parses args, reads the secret file once,
// serves until ctx is done (main cancels it on SIGINT/SIGTERM), then shuts
// down gracefully and returns nil.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":1883", "TCP `address` to listen on")
	auth := fs.String("auth", "token", "how clients log in: `token` (username = identity, password = a northstar token for this broker), mtls (username = identity, its X.509-SVID as the TLS client certificate) or secret (password = the lifecycle secret)")
	apiSocket := fs.String("api-socket", client.DefaultSocket, "the northstar API `socket` (--auth token)")
	spiffeSocket := fs.String("spiffe-socket", "", "the SPIFFE Workload API `address` (--auth mtls; default $SPIFFE_ENDPOINT_SOCKET, else "+client.DefaultSPIFFEEndpoint+")")
	federated := fs.String("federated", "", "comma-separated trust `domains` whose clients may log in too, with their whole SPIFFE ID as username (--auth mtls; their bundles come from the Workload API: SPIFFE federation)")
	secretPath := fs.String("secret-file", client.DefaultSecretPath, "`file` holding the lifecycle secret (64 lowercase hex characters), read again at every login, with secret.previous beside it after a rotation (--auth secret)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: broker [--listen ADDR] [--auth token|mtls|secret] [--api-socket SOCK] [--spiffe-socket ADDR] [--federated TD,...] [--secret-file FILE]\n\n"+
			"An MQTT broker that lets a client in with a northstar token or an X.509-SVID of its identity, or with the lifecycle secret.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}

	cfg := Config{Listen: *listen, Log: stdout}
	switch *auth {
	case "token":
		cfg.API = client.New(*apiSocket)
	case "mtls":
		src, err := X509Source(ctx, *spiffeSocket)
		if err != nil {
			return err
		}
		defer src.Close()
		cfg.SPIFFE = src
		for f := range strings.SplitSeq(*federated, ",") {
			if f == "" {
				continue
			}
			td, err := spiffeid.TrustDomainFromString(f)
			if err != nil {
				return fmt.Errorf("%w: --federated %q: %w", ErrUsage, f, err)
			}
			cfg.Federated = append(cfg.Federated, td)
		}
	case "secret":
		// Read once now to fail at start, not at the first login.
		secret, err := client.ReadSecret(*secretPath)
		if err != nil {
			return err
		}
		secret.Zero()
		cfg.SecretFile = *secretPath
	default:
		return fmt.Errorf("%w: --auth %q: want token, mtls or secret", ErrUsage, *auth)
	}
	b, err := Start(cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	b.log.printf("shutting down")
	b.Close()
	return nil
}

// SPIFFEEndpoint is the Workload API address to use: flag if set, else
// $SPIFFE_ENDPOINT_SOCKET (where northstar, or whoever runs the container,
// says it is), else northstar's.
func SPIFFEEndpoint(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("SPIFFE_ENDPOINT_SOCKET"); env != "" {
		return env
	}
	return client.DefaultSPIFFEEndpoint
}

// X509Source is go-spiffe's X509Source of the Workload API at
// SPIFFEEndpoint(addr), with its first SVID: the source keeps it renewed.
func X509Source(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	addr = SPIFFEEndpoint(addr)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return nil, fmt.Errorf("X.509-SVID from the SPIFFE Workload API at %s: %w", addr, err)
	}
	return src, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ExitCode maps Run's error to the process exit status: 0 ok, 2 usage,
// 1 anything else.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	default:
		return 1
	}
}

// secretAuthHook lets in the clients whose password is the secret (or,
// after a live rotation, the one before it, during the grace period) and
// lets them do everything.
type secretAuthHook struct {
	mqtt.HookBase
	path string
	log  *lineWriter
}

var _ mqtt.Hook = (*secretAuthHook)(nil)

func (*secretAuthHook) ID() string { return "northstar-secret-auth" }

// Provides must list every method the hook overrides: mochi only calls a
// hook's method for the events it says it provides. Without an OnACLCheck
// provider mochi denies every publish and subscribe.
func (*secretAuthHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate runs after mochi parsed and validated the CONNECT
// (cl.ID is already set, generated if the client sent none) and before the
// CONNACK; returning false makes mochi answer "Bad User Name or Password"
// (0x86 in MQTT 5; return code 5, "not authorized", in MQTT 3.1.1) and close
// the connection.
func (h *secretAuthHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	verdict, ok := "accepted", false
	// Read at every login: a live rotation replaces the file under us.
	current, previous, err := client.ReadSecrets(h.path)
	defer current.Zero()
	defer previous.Zero()
	switch pw := pk.Connect.Password; {
	case err != nil:
		verdict = "refused: " + err.Error()
	case !pk.Connect.PasswordFlag || len(pw) == 0:
		verdict = "refused: no password"
	case current.Matches(pw): // constant time
		ok = true
	case previous != nil && previous.Matches(pw):
		verdict, ok = "accepted (the secret before the last rotation)", true
	default:
		verdict = "refused: bad password"
	}
	// Client id and username are chosen by the (possibly hostile) client:
	// quoted and capped so they cannot forge or flood log lines.
	h.log.printf("%s client_id=%s username=%s remote=%s",
		verdict, logQuote(cl.ID), logQuote(string(pk.Connect.Username)), cl.Net.Remote)
	return ok
}

// OnACLCheck allows everything: only authenticated clients get this far.
func (*secretAuthHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
