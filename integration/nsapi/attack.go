// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/northstar-oci/northstar/client"
)

// socket is the API socket nsapi talks to.
func socket() string {
	if s := os.Getenv("NSAPI_SOCKET"); s != "" {
		return s
	}
	return client.DefaultSocket
}

// attack runs the commands of a neighbour that attacks the agent through
// its own socket, and prints what it got.
func attack(ctx context.Context, c *client.Client, args []string) error {
	num := func(i int) (int, error) {
		if len(args) <= i {
			return 0, fmt.Errorf("%s: missing argument %d", args[0], i)
		}
		return strconv.Atoi(args[i])
	}
	switch args[0] {
	case "flood-verify":
		n, err := num(1)
		if err != nil {
			return err
		}
		ttl, err := num(2)
		if err != nil {
			return err
		}
		self, err := c.Identity(ctx)
		if err != nil {
			return err
		}
		var tally verdicts
		for range n {
			t, err := c.Token(ctx, self.Identity, "flood", time.Duration(ttl)*time.Second)
			if err != nil {
				tally.other++
				continue
			}
			tally.add(c.VerifyToken(ctx, t.Token, self.Identity, "flood"))
		}
		tally.print()
	case "verify-each":
		if len(args) != 3 {
			return errors.New("verify-each SENDER APP")
		}
		var tally verdicts
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			tally.add(c.VerifyToken(ctx, sc.Text(), args[1], args[2]))
		}
		tally.print()
	case "hold":
		n, err := num(1)
		if err != nil {
			return err
		}
		secs, err := num(2)
		if err != nil {
			return err
		}
		return hold(n, time.Duration(secs)*time.Second)
	case "flood":
		if len(args) != 3 {
			return errors.New("flood PATH N")
		}
		n, err := num(2)
		if err != nil {
			return err
		}
		return flood(args[1], n)
	case "rtt":
		n, err := num(1)
		if err != nil {
			return err
		}
		// Paced below the socket's default rate (500/s): the victim
		// measures the neighbour's effect, not its own limit.
		every := 5 * time.Millisecond
		if len(args) > 2 {
			perSec, err := num(2)
			if err != nil {
				return err
			}
			every = time.Second / time.Duration(perSec)
		}
		var us []float64
		failures := 0
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range n {
			<-tick.C
			t0 := time.Now()
			if _, err := c.Identity(ctx); err != nil {
				failures++
				continue
			}
			us = append(us, float64(time.Since(t0).Microseconds()))
		}
		slices.Sort(us)
		at := func(p float64) float64 {
			if len(us) == 0 {
				return 0
			}
			return us[int(float64(len(us)-1)*p)]
		}
		fmt.Printf("p50=%.0f p99=%.0f failures=%d\n", at(0.5), at(0.99), failures)
	}
	return nil
}

func isStatus(err error, status int) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == status
}

// hold opens n connections, each sending a request's headers and the
// start of a 64 KiB body, then nothing; after d it prints how many the
// agent had closed.
func hold(n int, d time.Duration) error {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("unix", socket())
		if err != nil {
			fmt.Printf("opened=%d dial-error=%q\n", len(conns), err)
			break
		}
		fmt.Fprintf(c, "POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{\"audience\":")
		conns = append(conns, c)
	}
	fmt.Printf("holding=%d\n", len(conns))
	time.Sleep(d)
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); err == nil || errors.Is(err, io.EOF) {
			closed++ // the agent answered (408/400) or closed it
		}
		c.Close()
	}
	fmt.Printf("closed-by-agent=%d of %d\n", closed, len(conns))
	return nil
}

// flood sends n GETs of path over 4 keep-alive connections as fast as it
// can and prints the count of each status.
func flood(path string, n int) error {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket())
	}, MaxIdleConnsPerHost: 4}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				code := 0
				if rsp, err := hc.Get("http://northstar" + path); err == nil {
					io.Copy(io.Discard, rsp.Body)
					rsp.Body.Close()
					code = rsp.StatusCode
				}
				mu.Lock()
				counts[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	codes := make([]int, 0, len(counts))
	for code := range counts {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	for _, code := range codes {
		fmt.Printf("%d=%d ", code, counts[code])
	}
	fmt.Println()
	return nil
}

// verdicts counts token verifications: valid, refused for a full memory of
// used tokens (503), anything else.
type verdicts struct{ valid, busy, other int }

func (t *verdicts) add(v *client.Verification, err error) {
	switch {
	case isStatus(err, http.StatusServiceUnavailable):
		t.busy++
	case err != nil, !v.Valid:
		t.other++
	default:
		t.valid++
	}
}

func (t *verdicts) print() { fmt.Printf("valid=%d busy=%d other=%d\n", t.valid, t.busy, t.other) }
