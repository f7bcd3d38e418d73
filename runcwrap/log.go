// SPDX-License-Identifier: Apache-2.0

package runcwrap

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The engine gives runc a log file (--log) and reads the last error in it
// when a command fails: containerd's runc shim shows it as "OCI runtime
// create failed: <msg>" (Docker, containerd), podman and CRI-O likewise.
// The wrapper writes there as runc does, one record per line in the
// --log-format (runc's logrus: text by default, or json), so the engine
// shows the wrapper's error where it would show runc's. Best effort:
// the error also goes to stderr.

func (inv invocation) logError(msg string) { inv.logLine("error", msg) }
func (inv invocation) logInfo(msg string)  { inv.logLine("info", msg) }

func (inv invocation) logLine(level, msg string) {
	if inv.log == "" {
		return
	}
	now := time.Now().Format(time.RFC3339Nano)
	var line []byte
	if inv.logFormat == "json" {
		var err error
		line, err = json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{level, msg, now})
		if err != nil {
			return
		}
	} else {
		line = fmt.Appendf(nil, "time=%q level=%s msg=%q", now, level, msg)
	}
	// O_NONBLOCK: a fifo without a reader fails (ENXIO) instead of hanging
	// the start. runc opens the same file the same way, appending.
	f, err := os.OpenFile(inv.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
}
