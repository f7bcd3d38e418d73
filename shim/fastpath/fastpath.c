// SPDX-License-Identifier: Apache-2.0

// The fast path of containerd-shim-northstar-v2's `start`, run before the
// Go runtime starts (an ELF constructor, as runc's nsexec is): a Go
// process costs this VM about 4.5 ms more than a C one before main runs,
// most of it page faults of the runtime's own start (docs/performance.md,
// "The shim's fast path"), which is about all a container start through
// the shim may cost above the runc shim's.
//
// It asks the agent to do the wrapper's whole `start` (package shimstart,
// the control socket's 'W' request: the lifecycle check, the container's
// mounts in config.json) and execs the delegate the agent names. It
// returns, and the Go wrapper does the start as it always has, whenever
// anything is not as expected before the agent took the request: another
// action, an argument it does not know, no config or a line of it this
// reader does not understand, no agent, an agent that will not serve the
// start. Once the agent answered (or failed to in time) the start is
// decided: a failure prints "northstar shim: ..." and exits 1, as the Go
// wrapper does.
//
// It writes nothing to stdout (containerd reads the shim's address
// there) and allocates nothing: bounded buffers on the stack.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

// glibc passes a constructor (argc, argv, envp), static or dynamic; musl
// passes nothing.
#ifndef __GLIBC__
#error "shim/fastpath needs glibc: its constructor reads argc, argv and envp"
#endif

#define PATH_BUF 4096
#define CONFIG_MAX (64 * 1024) /* config.Load's bound */
#define ANSWER_MAX (16 * 1024)
#define MAX_ARGS 4096
// The agent gives a start control.RegisterTimeout (5 s) and its answer a
// second more to be written; a start waiting for one of its slots waits
// longer. Past this the start fails closed.
#define TIMEOUT_SECONDS 7

static int one_of(const char *name, size_t len, const char *const *names)
{
	for (; *names; names++)
		if (strlen(*names) == len && strncmp(*names, name, len) == 0)
			return 1;
	return 0;
}

struct invocation {
	const char *action;
	const char *id;
	const char *bundle;
};

// parse_args reads containerd's arguments as package shim's parseArgs
// does; 0 when they are not a well-formed shim invocation.
static int parse_args(int argc, char **argv, struct invocation *inv)
{
	static const char *const value_flags[] = {"namespace", "id", "socket", "bundle", "address", "publish-binary", NULL};
	static const char *const bool_flags[] = {"debug", "v", "info", NULL};
	memset(inv, 0, sizeof(*inv));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || strcmp(a, "-") == 0) {
			if (inv->action)
				return 0;
			inv->action = a;
			continue;
		}
		if (strcmp(a, "--") == 0)
			return 0;
		const char *name = a;
		while (*name == '-')
			name++;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const char *value = NULL;
		if (one_of(name, len, bool_flags))
			continue;
		if (!one_of(name, len, value_flags))
			return 0;
		if (eq)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else
			return 0;
		if (len == 2 && strncmp(name, "id", 2) == 0)
			inv->id = value;
		else if (len == 6 && strncmp(name, "bundle", 6) == 0)
			inv->bundle = value;
	}
	return 1;
}

// clean_abs reports whether p is an absolute path as filepath.Clean
// leaves it.
static int clean_abs(const char *p)
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

// rootless is peek.Rootless: not root, or root in rootlesskit's user
// namespace.
static int rootless(void)
{
	const char *rk = getenv("ROOTLESSKIT_STATE_DIR");
	if (geteuid() != 0 || (rk && *rk))
		return 1;
	char buf[128];
	int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return 0;
	buf[n] = 0;
	unsigned long inside, outside, count;
	char extra;
	return !(sscanf(buf, " %lu %lu %lu %c", &inside, &outside, &count, &extra) == 3 &&
		 inside == 0 && outside == 0 && count == 4294967295UL);
}

// config_path is peek.Discover(""): NORTHSTAR_CONFIG, else the rootful or
// rootless default. 0 when it is not a clean absolute path that fits: the
// Go wrapper cleans it, and "dir/../x" under a symlink would name another
// file than the one it loads.
static int config_path(char *out, size_t size)
{
	const char *env = getenv("NORTHSTAR_CONFIG");
	int n;
	if (env && *env)
		n = snprintf(out, size, "%s", env);
	else if (!rootless())
		n = snprintf(out, size, "/etc/northstar/config.toml");
	else if (getenv("XDG_CONFIG_HOME") && *getenv("XDG_CONFIG_HOME"))
		n = snprintf(out, size, "%s/northstar/config.toml", getenv("XDG_CONFIG_HOME"));
	else if (getenv("HOME") && *getenv("HOME"))
		n = snprintf(out, size, "%s/.config/northstar/config.toml", getenv("HOME"));
	else
		return 0;
	return n > 0 && (size_t)n < size && clean_abs(out);
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
// take for headers. peek.AgentSocket is the real reader; this one only
// needs to find the agent, which checks the config is its own.
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

static void fail(const char *fmt, ...)
{
	char msg[ANSWER_MAX + 256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	dprintf(STDERR_FILENO, "northstar shim: %s\n", msg);
	_exit(1);
}

// ask sends the request on a connection to the agent at socket_path:
// -1 when it could not (the Go wrapper does the start), else the socket.
static int ask(const char *socket_path, const char *config, const char *bundle, const char *id)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (socket_path[0] != '/' || strlen(socket_path) >= sizeof(addr.sun_path))
		return -1;
	strcpy(addr.sun_path, socket_path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = TIMEOUT_SECONDS};
	struct ucred cred;
	socklen_t credlen = sizeof(cred);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    // internal/peercred: root of this user namespace or ourselves.
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		close(fd);
		return -1;
	}
	char req[3 * PATH_BUF + 32];
	int n = snprintf(req, sizeof(req), "W%s%c%s%c%s%c%d%c", config, 0, bundle, 0, id, 0, (int)getppid(), 0);
	if (n <= 0 || (size_t)n >= sizeof(req)) {
		close(fd);
		return -1;
	}
	ssize_t w;
	do
		w = send(fd, req, n, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w != n) {
		close(fd);
		return -1;
	}
	return fd;
}

// exec_delegate becomes the delegate, with containerd's arguments and
// environment; never this binary itself.
static void exec_delegate(const char *delegate, int argc, char **argv, char **envp)
{
	struct stat self, d;
	if (delegate[0] != '/')
		fail("the agent named the delegate %s, not an absolute path", delegate);
	if (stat("/proc/self/exe", &self) == 0 && stat(delegate, &d) == 0 && self.st_dev == d.st_dev && self.st_ino == d.st_ino)
		fail("[shim] delegate %s is this wrapper itself; name the runc shim (containerd-shim-runc-v2)", delegate);
	char *args[argc + 1];
	args[0] = (char *)delegate;
	for (int i = 1; i < argc; i++)
		args[i] = argv[i];
	args[argc] = NULL;
	execve(delegate, args, envp);
	fail("exec %s: %s", delegate, strerror(errno));
}

__attribute__((constructor)) static void northstar_shim_fast_path(int argc, char **argv, char **envp)
{
	struct invocation inv;
	if (argc < 2 || argc > MAX_ARGS || !parse_args(argc, argv, &inv) || !inv.action || strcmp(inv.action, "start") != 0 ||
	    !inv.id || !*inv.id || getenv("NORTHSTAR_SHIM_NO_FAST_PATH"))
		return;
	char cwd[PATH_BUF];
	const char *bundle = inv.bundle;
	if (!bundle || !*bundle) {
		if (!getcwd(cwd, sizeof(cwd)))
			return;
		bundle = cwd;
	}
	char config[PATH_BUF], socket_path[PATH_BUF];
	static char data[CONFIG_MAX];
	if (!clean_abs(bundle) || strlen(bundle) >= PATH_BUF || strlen(inv.id) >= PATH_BUF || !config_path(config, sizeof(config)))
		return;
	ssize_t n = read_config(config, data);
	if (n < 0 || !agent_socket(data, n, socket_path, sizeof(socket_path)))
		return;
	int fd = ask(socket_path, config, bundle, inv.id);
	if (fd < 0)
		return;
	char answer[ANSWER_MAX + 1];
	ssize_t r;
	do
		r = recv(fd, answer, ANSWER_MAX, MSG_TRUNC);
	while (r < 0 && errno == EINTR);
	int err = errno;
	close(fd);
	// Closed unanswered: an agent older than the 'W' request reads it and
	// closes (0); one that refused this peer closes before reading it
	// (ECONNRESET). Neither acted on it.
	if (r == 0 || (r < 0 && err == ECONNRESET))
		return;
	if (r < 0)
		fail("the agent at %s gave no answer: %s", socket_path, strerror(err));
	if (r > ANSWER_MAX)
		fail("the agent at %s gave a malformed answer", socket_path);
	answer[r] = 0;
	switch (answer[0]) {
	case 'y':
		exec_delegate(answer + 1, argc, argv, envp);
		break;
	case 'n':
		return;
	case 'e':
		fail("%s", answer + 1);
	}
	fail("the agent at %s gave a malformed answer", socket_path);
}
