// SPDX-License-Identifier: Apache-2.0

// What the C fast paths share (package internal/prestart): the config's
// agent socket and one exchange with the agent, before the Go runtime
// starts. Functions return 0 or -1 where the caller should leave the
// work to its Go code, which reads the config with the real parser and
// says what is wrong.

#ifndef NORTHSTAR_PRESTART_H
#define NORTHSTAR_PRESTART_H

#include <stddef.h>
#include <sys/types.h>

#define NS_PATH_BUF 4096

// NS_MSG_BUF bounds a line ns_fail writes: an agent's answer (16 KiB in
// both protocols) and a path or two around it.
#define NS_MSG_BUF (16 * 1024 + NS_PATH_BUF + 256)

// ns_fail writes "who: " and the message fmt formats on one line to
// stderr and exits 1: how a fast path fails a start it took.
void ns_fail(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

// ns_host_root is idmap.HostUID() == 0: this process's uid, as the parent
// user namespace sees it, is root (/proc/self/uid_map).
int ns_host_root(void);

// ns_clean_abs reports whether p is an absolute path as filepath.Clean
// leaves it.
int ns_clean_abs(const char *p);

// ns_config_path is config/peek.Discover(flag): flag, else
// NORTHSTAR_CONFIG, else the rootful or rootless default. With from_cwd a
// relative path is taken from the working directory, as filepath.Abs
// takes it (the agent hook); without, it is refused (the shim's Go
// wrapper refuses it). 1 and the path in out; 0 when it is not a clean
// absolute path that fits (the Go code cleans it, and "dir/../x" under a
// symlink would name another file than the one it loads).
int ns_config_path(const char *flag, int from_cwd, char *out, size_t size);

// ns_agent_socket finds [agent] socket in the config file at path: 1 and
// the socket's path in out when the file is readable (at most
// config.Load's 64 KiB) and the line has the simplest form; 0 otherwise.
int ns_agent_socket(const char *path, char *out, size_t size);

// ns_ask connects to the agent at socket_path (SOCK_SEQPACKET), checks
// that it runs as root of this user namespace or as this user
// (internal/peercred), and sends msg as one message; connect, send and
// receive time out after timeout_seconds. The connected socket, or -1
// when nothing reached the agent, with why (at most NS_WHY_BUF bytes)
// saying what failed, as package hookstart's Ask says it.
#define NS_WHY_BUF (NS_PATH_BUF + 256)
int ns_ask(const char *socket_path, const void *msg, size_t len, int timeout_seconds, char *why);

// ns_answer receives the agent's answer on fd, closes fd, and leaves the
// answer in buf NUL-terminated: its length; 0 when the agent closed
// unanswered (an agent that refused the peer or does not know the
// request: it did not act on it); size when it is longer than buf holds;
// -1 with errno when none came.
ssize_t ns_answer(int fd, char *buf, size_t size);

#endif
