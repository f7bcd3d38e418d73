// SPDX-License-Identifier: Apache-2.0

// Command nsapi calls the northstar API from inside a container, for the
// integration tests (and as a one-file example of package client):
//
//	nsapi identity
//	nsapi token AUDIENCE APP
//	nsapi verify TOKEN SENDER APP          prints valid or the reason
//	nsapi sign DATA                        prints the base64 signature
//	nsapi verify-sig SENDER DATA SIGNATURE prints true or false
//	nsapi derive PEER APP                  prints the key in hex
//	nsapi tokens AUDIENCE APP N            mints N tokens, one per line
//	nsapi verify-all SENDER APP < tokens   prints how many verified
//
// and, as the neighbour attacking the agent through its own socket
// (DESIGN.md §11), each printing what it got:
//
//	nsapi flood-verify N TTL_SECONDS       mints N tokens for itself and verifies each
//	nsapi verify-each SENDER APP < tokens  verifies each, counting 503s instead of failing
//	nsapi hold N SECONDS                   N connections each stalled mid-body, then how many the agent closed
//	nsapi flood PATH N                     N GETs of PATH over 4 connections, counted by status
//	nsapi rtt N [PER_SECOND]               N identity round trips (200 a second): p50 and p99 in µs, failures
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/northstar-oci/northstar/client"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nsapi:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := client.New(os.Getenv("NSAPI_SOCKET"))
	need := func(n int) error {
		if len(args) != n+1 {
			return fmt.Errorf("%s takes %d arguments", args[0], n)
		}
		return nil
	}
	if len(args) == 0 {
		return fmt.Errorf("usage: nsapi identity|token|verify|sign|verify-sig|derive|tokens|verify-all ...")
	}
	switch args[0] {
	case "identity":
		id, err := c.Identity(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("%s %d\n", id.Identity, id.Generation)
	case "token":
		if err := need(2); err != nil {
			return err
		}
		t, err := c.Token(ctx, args[1], args[2], 0)
		if err != nil {
			return err
		}
		fmt.Println(t.Token)
	case "verify":
		if err := need(3); err != nil {
			return err
		}
		v, err := c.VerifyToken(ctx, args[1], args[2], args[3])
		if err != nil {
			return err
		}
		if v.Valid {
			fmt.Println("valid")
		} else {
			fmt.Println(v.Reason)
		}
	case "sign":
		if err := need(1); err != nil {
			return err
		}
		sig, _, err := c.Sign(ctx, "", []byte(args[1]))
		if err != nil {
			return err
		}
		fmt.Println(base64.StdEncoding.EncodeToString(sig))
	case "verify-sig":
		if err := need(3); err != nil {
			return err
		}
		sig, err := base64.StdEncoding.DecodeString(args[3])
		if err != nil {
			return err
		}
		ok, err := c.VerifySignature(ctx, args[1], "", 0, []byte(args[2]), sig)
		if err != nil {
			return err
		}
		fmt.Println(ok)
	case "derive":
		if err := need(2); err != nil {
			return err
		}
		k, err := c.Derive(ctx, args[1], args[2])
		if err != nil {
			return err
		}
		fmt.Println(hex.EncodeToString(k))
	case "tokens":
		if err := need(3); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[3])
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			t, err := c.Token(ctx, args[1], args[2], 0)
			if err != nil {
				return err
			}
			fmt.Println(t.Token)
		}
	case "verify-all":
		if err := need(2); err != nil {
			return err
		}
		valid, total := 0, 0
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			total++
			v, err := c.VerifyToken(ctx, sc.Text(), args[1], args[2])
			if err != nil {
				return err
			}
			if v.Valid {
				valid++
			}
		}
		fmt.Printf("%d/%d\n", valid, total)
	case "flood-verify", "verify-each", "hold", "flood", "rtt":
		return attack(ctx, c, args)
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}
