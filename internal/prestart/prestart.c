// SPDX-License-Identifier: Apache-2.0

// See prestart.h and prestart.go. Bounded buffers, no allocation, nothing
// written to stdout, and to stderr only the caller's line (ns_fail).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "prestart.h"

#define CONFIG_MAX (64 * 1024) /* config.Load's bound */

int ns_clean_abs(const char *p)
{
	if (p[0] != '/')
		return 0;
	if (strcmp(p, "/") == 0)
		return 1;
	size_t n = strlen(p);
	if (p[n - 1] == '/')
		return 0;
	for (const char *s = p; (s = strchr(s, '/')) != NULL; s++) {
		const char *c = s + 1;
		if (*c == '/' || (c[0] == '.' && (c[1] == '/' || c[1] == 0)) ||
		    (c[0] == '.' && c[1] == '.' && (c[2] == '/' || c[2] == 0)))
			return 0;
	}
	return 1;
}

void ns_fail(const char *who, const char *fmt, ...)
{
	char msg[NS_MSG_BUF];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	dprintf(STDERR_FILENO, "%s: %s\n", who, msg);
	_exit(1);
}

// read_uid_map reads /proc/self/uid_map, as much as fits in buf with its
// NUL: its length, or -1.
static ssize_t read_uid_map(char *buf, size_t size)
{
	int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n >= 0)
		buf[n] = 0;
	return n;
}

int ns_host_root(void)
{
	char buf[4096];
	if (read_uid_map(buf, sizeof(buf)) <= 0)
		return 0;
	unsigned long euid = geteuid(), inside, outside, count;
	for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (sscanf(line, " %lu %lu %lu", &inside, &outside, &count) == 3 && euid >= inside && euid - inside < count)
			return outside + (euid - inside) == 0;
	return 0;
}

// rootless is peek.Rootless: not root, or root in rootlesskit's user
// namespace.
static int rootless(void)
{
	const char *rk = getenv("ROOTLESSKIT_STATE_DIR");
	if (geteuid() != 0 || (rk && *rk))
		return 1;
	char buf[128];
	if (read_uid_map(buf, sizeof(buf)) < 0)
		return 0;
	unsigned long inside, outside, count;
	char extra;
	return !(sscanf(buf, " %lu %lu %lu %c", &inside, &outside, &count, &extra) == 3 &&
		 inside == 0 && outside == 0 && count == 4294967295UL);
}

int ns_config_path(const char *flag, int from_cwd, char *out, size_t size)
{
	const char *env = getenv("NORTHSTAR_CONFIG");
	const char *path = NULL;
	char dflt[NS_PATH_BUF];
	int n;
	if (flag && *flag)
		path = flag;
	else if (env && *env)
		path = env;
	else if (!rootless())
		path = "/etc/northstar/config.toml";
	else if (getenv("XDG_CONFIG_HOME") && *getenv("XDG_CONFIG_HOME")) {
		n = snprintf(dflt, sizeof(dflt), "%s/northstar/config.toml", getenv("XDG_CONFIG_HOME"));
		path = n > 0 && (size_t)n < sizeof(dflt) ? dflt : NULL;
	} else if (getenv("HOME") && *getenv("HOME")) {
		n = snprintf(dflt, sizeof(dflt), "%s/.config/northstar/config.toml", getenv("HOME"));
		path = n > 0 && (size_t)n < sizeof(dflt) ? dflt : NULL;
	}
	if (!path)
		return 0;
	if (path[0] == '/')
		n = snprintf(out, size, "%s", path);
	else if (!from_cwd)
		return 0;
	else {
		char cwd[NS_PATH_BUF];
		if (!getcwd(cwd, sizeof(cwd)))
			return 0;
		n = snprintf(out, size, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path);
	}
	return n > 0 && (size_t)n < size && ns_clean_abs(out);
}

static const char *skip_space(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	return s;
}

// rest_is_empty: only blanks and a comment from s to end.
static int rest_is_empty(const char *s, const char *end)
{
	s = skip_space(s, end);
	return s == end || *s == '#';
}

static int bare_key_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// agent_socket finds [agent] socket in the TOML of data: 1 and the path
// in out when found on a line of the simplest form (socket = "..." or
// '...', no escapes, under a [agent] header), 0 otherwise, and 0 for a
// file with a multi-line string anywhere, whose lines this reader could
// take for headers.
static int agent_socket(const char *data, size_t len, char *out, size_t size)
{
	if (memmem(data, len, "\"\"\"", 3) || memmem(data, len, "'''", 3))
		return 0;
	int in_agent = 0;
	const char *end_all = data + len;
	for (const char *line = data; line < end_all;) {
		const char *end = memchr(line, '\n', end_all - line);
		const char *next = end ? end + 1 : end_all;
		if (!end)
			end = end_all;
		if (end > line && end[-1] == '\r')
			end--;
		const char *s = skip_space(line, end);
		line = next;
		if (s == end || *s == '#')
			continue;
		if (*s == '[') {
			// [agent] alone is the table; any other header leaves it.
			const char *k = skip_space(s + 1, end);
			const char *e = k;
			while (e < end && bare_key_char(*e))
				e++;
			const char *c = skip_space(e, end);
			in_agent = e - k == 5 && strncmp(k, "agent", 5) == 0 && c < end && *c == ']' && rest_is_empty(c + 1, end);
			continue;
		}
		if (!in_agent)
			continue;
		const char *e = s;
		while (e < end && bare_key_char(*e))
			e++;
		if (e - s != 6 || strncmp(s, "socket", 6) != 0)
			continue;
		const char *v = skip_space(e, end);
		if (v == end || *v != '=')
			return 0;
		v = skip_space(v + 1, end);
		if (v == end || (*v != '"' && *v != '\''))
			return 0;
		char quote = *v++;
		const char *q = memchr(v, quote, end - v);
		if (!q || !rest_is_empty(q + 1, end) || (quote == '"' && memchr(v, '\\', q - v)) ||
		    (size_t)(q - v) >= size || q == v)
			return 0;
		memcpy(out, v, q - v);
		out[q - v] = 0;
		return 1;
	}
	return 0;
}

// read_config reads the file at path, at most CONFIG_MAX bytes, into buf.
static ssize_t read_config(const char *path, char *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, CONFIG_MAX - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			close(fd);
			return r < 0 ? -1 : (ssize_t)n;
		}
		n += r;
		if (n == CONFIG_MAX) {
			close(fd);
			return -1; // too large: config.Load refuses it
		}
	}
}

int ns_agent_socket(const char *path, char *out, size_t size)
{
	static char data[CONFIG_MAX];
	ssize_t n = read_config(path, data);
	return n >= 0 && agent_socket(data, n, out, size);
}

int ns_ask(const char *socket_path, const void *msg, size_t len, int timeout_seconds, char *why)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (socket_path[0] != '/' || strlen(socket_path) >= sizeof(addr.sun_path)) {
		snprintf(why, NS_WHY_BUF, "no agent at %s: not an absolute socket path that fits", socket_path);
		return -1;
	}
	strcpy(addr.sun_path, socket_path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, NS_WHY_BUF, "socket: %s", strerror(errno));
		return -1;
	}
	struct timeval tv = {.tv_sec = timeout_seconds};
	struct ucred cred;
	socklen_t credlen = sizeof(cred);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		snprintf(why, NS_WHY_BUF, "socket timeout: %s", strerror(errno));
	else if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		snprintf(why, NS_WHY_BUF, "no agent at %s: %s", socket_path, strerror(errno));
	else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0)
		snprintf(why, NS_WHY_BUF, "%s: SO_PEERCRED: %s", socket_path, strerror(errno));
	// internal/peercred: root of this user namespace or ourselves.
	else if (cred.uid != 0 && cred.uid != geteuid())
		snprintf(why, NS_WHY_BUF, "%s: peer refused: uid %u", socket_path, cred.uid);
	else {
		ssize_t w;
		do
			w = send(fd, msg, len, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w >= 0 && (size_t)w == len)
			return fd;
		snprintf(why, NS_WHY_BUF, "send to the agent at %s: %s", socket_path, w < 0 ? strerror(errno) : "short write");
	}
	close(fd);
	return -1;
}

ssize_t ns_answer(int fd, char *buf, size_t size)
{
	ssize_t r;
	do
		r = recv(fd, buf, size - 1, MSG_TRUNC);
	while (r < 0 && errno == EINTR);
	int err = errno;
	close(fd);
	// Closed unanswered: an agent older than the request reads it and
	// closes (0); one that refused this peer closes before reading it
	// (ECONNRESET). Neither acted on it.
	if (r == 0 || (r < 0 && err == ECONNRESET))
		return 0;
	if (r < 0) {
		errno = err;
		return -1;
	}
	if ((size_t)r > size - 1) {
		buf[size - 1] = 0;
		return size;
	}
	buf[r] = 0;
	return r;
}
