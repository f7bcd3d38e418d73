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
// there) and allocates nothing: bounded buffers on the stack. Finding the
// agent and the exchange with it are internal/prestart's, which the agent
// hook's fast path shares.

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prestart.h"

// glibc passes a constructor (argc, argv, envp), static or dynamic; musl
// passes nothing.
#ifndef __GLIBC__
#error "shim/fastpath needs glibc: its constructor reads argc, argv and envp"
#endif

#define PATH_BUF NS_PATH_BUF
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

#define fail(...) ns_fail("northstar shim", __VA_ARGS__)

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
	if (!ns_clean_abs(bundle) || strlen(bundle) >= PATH_BUF || strlen(inv.id) >= PATH_BUF || !ns_config_path(NULL, 0, config, sizeof(config)) ||
	    !ns_agent_socket(config, socket_path, sizeof(socket_path)))
		return;
	char req[3 * PATH_BUF + 32];
	int n = snprintf(req, sizeof(req), "W%s%c%s%c%s%c%d%c", config, 0, bundle, 0, inv.id, 0, (int)getppid(), 0);
	if (n <= 0 || (size_t)n >= sizeof(req))
		return;
	char why[NS_WHY_BUF];
	int fd = ns_ask(socket_path, req, n, TIMEOUT_SECONDS, why);
	if (fd < 0)
		return;
	char answer[ANSWER_MAX + 1];
	ssize_t r = ns_answer(fd, answer, sizeof(answer));
	if (r == 0)
		return; // not acted on: the Go wrapper's
	if (r < 0)
		fail("the agent at %s gave no answer: %s", socket_path, strerror(errno));
	if (r > ANSWER_MAX)
		fail("the agent at %s gave a malformed answer", socket_path);
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
