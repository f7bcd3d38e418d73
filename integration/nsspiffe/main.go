// SPDX-License-Identifier: Apache-2.0

// Command nsspiffe uses the SPIFFE Workload API from inside a container,
// for the integration tests, through go-spiffe v2 alone (no northstar
// code): it finds the API where every SPIFFE client does, in
// SPIFFE_ENDPOINT_SOCKET, else at northstar's unix:///run/northstar/api/spiffe.sock.
//
//	nsspiffe x509                  prints "<SPIFFE ID> <leaf, base64 DER> <bundle CA, base64 DER>" (X509Source)
//	nsspiffe x509-key              the same, and the SVID's key (base64 PKCS #8) last: for the leak test only
//	nsspiffe jwt AUDIENCE          prints a JWT-SVID (JWTSource), after checking it against the JWT bundle
//	nsspiffe validate TOKEN AUD    prints the SPIFFE ID the agent's ValidateJWTSVID answers
//	nsspiffe watch N               prints "<serial hex>" for each of the first N X.509-SVIDs the stream sends
//	nsspiffe tls-server ADDR ID    serves mutual TLS on ADDR to ID alone, answering "hello <peer ID>" to a line;
//	                               prints "listening on <address>" first
//	nsspiffe tls-client ADDR ID    connects to ADDR, whose SVID must be ID, and prints the answer
//	nsspiffe streams N C           N raw FetchX509SVID streams over C connections at once: prints
//	                               "ok <streams that got an SVID>" and a count per refusal code, holding them 2 s
//	nsspiffe stream                one raw FetchX509SVID stream (go-spiffe's generated client, no retries):
//	                               prints "svid <ID>..." per message, then "end <code>: <message>" when it ends
package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nsspiffe:", err)
		os.Exit(1)
	}
}

func addr() workloadapi.ClientOption {
	if a := os.Getenv("SPIFFE_ENDPOINT_SOCKET"); a != "" {
		return workloadapi.WithAddr(a)
	}
	return workloadapi.WithAddr("unix:///run/northstar/api/spiffe.sock")
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: nsspiffe x509|x509-key|jwt|validate|watch|tls-server|tls-client ...")
	}
	need := func(n int) error {
		if len(args) != n+1 {
			return fmt.Errorf("%s takes %d arguments", args[0], n)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b64 := base64.StdEncoding.EncodeToString
	switch args[0] {
	case "x509", "x509-key":
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr()))
		if err != nil {
			return err
		}
		defer src.Close()
		svid, err := src.GetX509SVID()
		if err != nil {
			return err
		}
		b, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			return err
		}
		fmt.Printf("%s %s %s", svid.ID, b64(svid.Certificates[0].Raw), b64(b.X509Authorities()[0].Raw))
		if args[0] == "x509-key" {
			key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
			if err != nil {
				return err
			}
			fmt.Printf(" %s", b64(key))
		}
		fmt.Println()
	case "jwt":
		if err := need(1); err != nil {
			return err
		}
		src, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(addr()))
		if err != nil {
			return err
		}
		defer src.Close()
		svid, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: args[1]})
		if err != nil {
			return err
		}
		// Offline, against the JWT bundle the source streams.
		if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), src, []string{args[1]}); err != nil {
			return fmt.Errorf("the JWT-SVID against the JWT bundle: %w", err)
		}
		fmt.Println(svid.Marshal())
	case "validate":
		if err := need(2); err != nil {
			return err
		}
		c, err := workloadapi.New(ctx, addr())
		if err != nil {
			return err
		}
		defer c.Close()
		svid, err := c.ValidateJWTSVID(ctx, args[1], args[2])
		if err != nil {
			return err
		}
		fmt.Println(svid.ID)
	case "watch":
		if err := need(1); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		c, err := workloadapi.New(ctx, addr())
		if err != nil {
			return err
		}
		defer c.Close()
		w := &watcher{left: n, done: cancel}
		if err := c.WatchX509Context(ctx, w); err != nil && !errors.Is(err, context.Canceled) && w.left > 0 {
			return err
		}
	case "tls-server":
		if err := need(2); err != nil {
			return err
		}
		id, err := spiffeid.FromString(args[2])
		if err != nil {
			return err
		}
		ln, err := spiffetls.ListenWithMode(context.Background(), "tcp", args[1],
			spiffetls.MTLSServerWithSourceOptions(tlsconfig.AuthorizeID(id), workloadapi.WithClientOptions(addr())))
		if err != nil {
			return err
		}
		fmt.Println("listening on", ln.Addr())
		for {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
					fmt.Fprintln(os.Stderr, "refused:", err)
					return
				}
				peer, err := spiffetls.PeerIDFromConn(conn)
				if err != nil {
					fmt.Fprintln(os.Stderr, "peer:", err)
					return
				}
				fmt.Fprintf(conn, "hello %s\n", peer)
			}()
		}
	case "tls-client":
		if err := need(2); err != nil {
			return err
		}
		id, err := spiffeid.FromString(args[2])
		if err != nil {
			return err
		}
		conn, err := spiffetls.DialWithMode(ctx, "tcp", args[1],
			spiffetls.MTLSClientWithSourceOptions(tlsconfig.AuthorizeID(id), workloadapi.WithClientOptions(addr())))
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, "hello\n"); err != nil {
			return err
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		fmt.Println(strings.TrimSpace(reply))
	case "stream":
		return stream()
	case "streams":
		if err := need(2); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		c, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return streams(n, c)
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}

// rawConn is a gRPC connection to the Workload API, and the context its
// calls need (the security header).
func rawConn() (*grpc.ClientConn, context.Context, error) {
	a := os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	if a == "" {
		a = "unix:///run/northstar/api/spiffe.sock"
	}
	conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
	return conn, metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true"), err
}

// streams opens n FetchX509SVID streams over c connections at once and
// counts how each began.
func streams(n, c int) error {
	var conns []*grpc.ClientConn
	for range c {
		conn, _, err := rawConn()
		if err != nil {
			return err
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	_, ctx, _ := rawConn()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	counts := map[string]int{}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := workload.NewSpiffeWorkloadAPIClient(conns[i%c]).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				counts[status.Code(err).String()]++
				return
			}
			counts["ok"]++
		}()
	}
	wg.Wait()
	fmt.Printf("ok %d", counts["ok"])
	delete(counts, "ok")
	for code, k := range counts {
		fmt.Printf(" %s %d", code, k)
	}
	fmt.Println()
	time.Sleep(2 * time.Second)
	return nil
}

// stream prints what one FetchX509SVID stream sends until it ends.
func stream() error {
	conn, ctx, err := rawConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	s, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			st := status.Convert(err)
			fmt.Printf("end %s: %s\n", st.Code(), st.Message())
			return nil
		}
		line := "svid"
		for _, v := range resp.Svids {
			line += " " + v.SpiffeId
		}
		fmt.Println(line)
	}
}

// watcher prints the serial of each X.509-SVID a stream sends and ends
// the watch after the first left.
type watcher struct {
	left int
	done func()
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if w.left <= 0 {
		return
	}
	svid := c.DefaultSVID()
	fmt.Println(hex.EncodeToString(svid.Certificates[0].SerialNumber.Bytes()))
	if w.left--; w.left == 0 {
		w.done()
	}
}

func (w *watcher) OnX509ContextWatchError(err error) {
	if !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "watch:", err)
	}
}
