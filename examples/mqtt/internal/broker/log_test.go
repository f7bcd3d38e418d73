// SPDX-License-Identifier: Apache-2.0

package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestMochiHandlerOmitsPackets(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(&mochiHandler{out: &lineWriter{w: &out}}).With("listener", "tcp")
	pk := packets.Packet{Connect: packets.ConnectParams{Password: []byte("s3cr3t-password"), Username: []byte("u")}}

	log.Info("dropped below WARN", "pk", pk)
	log.Warn("error processing packet", "error", errors.New("protocol violation"), "client", "a b\nc", "pk", pk, "n", 3,
		slog.Group("g", "pk", &pk, "payload", []byte("s3cr3t-payload")))
	log.Warn("", "error", packets.ErrBadUsernameOrPassword)      // echo of a refusal the hook logged
	log.Warn("", "error", fmt.Errorf("read: %w", net.ErrClosed)) // the broker closed it
	log.Warn("", "error", io.EOF)
	log.WithGroup("grp").Error("boom", "k", "v")

	got := out.String()
	want := "broker: mochi: WARN error processing packet listener=tcp error=\"protocol violation\" client=\"a b\\nc\" pk=[omitted] n=3 g=[omitted]\n" +
		"broker: mochi: WARN connection ended listener=tcp error=EOF\n" +
		"broker: mochi: ERROR boom listener=tcp grp.k=v\n"
	if got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "s3cr3t") {
		t.Error("log contains packet contents")
	}
}

func TestMochiHandlerEnabled(t *testing.T) {
	h := &mochiHandler{out: &lineWriter{w: new(bytes.Buffer)}}
	for l, want := range map[slog.Level]bool{slog.LevelDebug: false, slog.LevelInfo: false, slog.LevelWarn: true, slog.LevelError: true} {
		if got := h.Enabled(context.Background(), l); got != want {
			t.Errorf("Enabled(%v) = %v, want %v", l, got, want)
		}
	}
}

func TestLogQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                       `""`,
		"plain":                  `"plain"`,
		"new\nline":              `"new\nline"`,
		"\x1b[31mred":            `"\x1b[31mred"`,
		strings.Repeat("a", 200): `"` + strings.Repeat("a", maxLogField) + `"...`,
	} {
		if got := logQuote(in); got != want {
			t.Errorf("logQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
