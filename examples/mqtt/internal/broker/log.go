// SPDX-License-Identifier: Apache-2.0

package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/mochi-mqtt/server/v2/packets"
)

// lineWriter writes whole "broker: ..." lines, one Write call each, so lines
// from concurrent connections never interleave.
type lineWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	line := fmt.Appendf([]byte("broker: "), format, args...)
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(line) // nowhere to report a failing log
}

// maxLogField caps client-chosen strings (client id, username; up to 64 KiB
// each in MQTT) in log lines.
const maxLogField = 128

// logQuote renders a client-chosen string for the log: Go-quoted, so a
// newline or an escape sequence cannot start a forged line, and capped.
func logQuote(s string) string {
	if len(s) > maxLogField {
		return strconv.Quote(s[:maxLogField]) + "..."
	}
	return strconv.Quote(s)
}

// mochiHandler is the slog.Handler given to mochi. mochi attaches whole
// packets to some records (e.g. "error processing packet" carries "pk", which
// for a second CONNECT holds the password), so the handler prints only
// scalar attributes and error strings and replaces anything else with
// "[omitted]". Records below WARN are dropped: the startup, connection and
// shutdown lines worth having are printed by the broker itself.
type mochiHandler struct {
	out    *lineWriter
	prefix string // pre-rendered attributes from WithAttrs
	group  string // key prefix from WithGroup, "" or "name."
}

var _ slog.Handler = (*mochiHandler)(nil)

func (*mochiHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *mochiHandler) Handle(_ context.Context, r slog.Record) error {
	if isRedundant(r) {
		return nil
	}
	msg := r.Message
	if msg == "" {
		// mochi's listener reports every connection that ended with
		// an error this way (EOF, protocol violation, ...).
		msg = "connection ended"
	}
	var b strings.Builder
	b.WriteString("mochi: ")
	b.WriteString(r.Level.String())
	b.WriteByte(' ')
	b.WriteString(msg)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		return true
	})
	h.out.printf("%s", b.String())
	return nil
}

// isRedundant reports whether r is one of the listener's reports of an
// ended connection (empty message, an "error" attribute) that tells nothing
// new: a refusal our auth hook or TLS listener already logged, or a
// connection the broker itself closed (shutdown, session takeover).
func isRedundant(r slog.Record) bool {
	if r.Message != "" {
		return false
	}
	redundant := false
	r.Attrs(func(a slog.Attr) bool {
		err, ok := a.Value.Resolve().Any().(error)
		var handshake *handshakeError
		redundant = ok && (errors.Is(err, packets.ErrBadUsernameOrPassword) || errors.Is(err, net.ErrClosed) || errors.As(err, &handshake))
		return !redundant
	})
	return redundant
}

func (h *mochiHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range attrs {
		appendAttr(&b, h.group, a)
	}
	h2 := *h
	h2.prefix = b.String()
	return &h2
}

func (h *mochiHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group += name + "."
	return &h2
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	if a.Equal(slog.Attr{}) {
		return
	}
	b.WriteByte(' ')
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(safeValue(a.Value))
}

// safeValue renders scalars and errors; structs, slices, maps and groups
// (packets, byte payloads) become "[omitted]".
func safeValue(v slog.Value) string {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return maybeQuote(v.String())
	case slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration, slog.KindTime:
		return v.String()
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return maybeQuote(err.Error())
		}
	}
	return "[omitted]"
}

func maybeQuote(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r == '"' || r == '=' || unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}
