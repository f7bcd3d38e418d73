// SPDX-License-Identifier: Apache-2.0

// The fast path of northstar-agent-hook, run before the Go runtime starts
// (an ELF constructor, as the shim's fast path and runc's nsexec are): a
// Go process costs this VM about 4.5 ms before main runs, more than the
// hook row allows the hook's whole work above a Go hook that only reads
// its state (docs/performance.md, "The agent hook's fast path").
//
// It does what package hook/agenthook's Run does when the agent serves
// the start: finds the config (--config, else as config/peek.Discover
// does) and [agent] socket in it, reads the state on stdin, sends the
// agent the config's absolute path, its parent's pid (the runtime) and
// the state, and exits 0 when the agent served the start, 1 with
// "northstar-agent-hook: ..." when the agent failed it. Everything else
// is the Go hook's. Before it reads stdin: an argument this reader does
// not know, a host-wide hook file run by a rootless user, no config or a
// line of it it does not understand; it returns and has touched nothing.
// After: a state too long (the Go hook refuses it), and no agent, the
// agent closing unanswered or an agent that does not serve the start: the
// Go hook then becomes northstar-hook without asking again, told why
// (northstar_agent_hook_declined). The state goes back to the Go hook on
// stdin, in a memfd, as the Go hook hands it to northstar-hook.
//
// It writes nothing to stdout and allocates nothing: bounded buffers,
// static where they are large.

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "prestart.h"

// glibc passes a constructor (argc, argv, envp), static or dynamic; musl
// passes nothing.
#ifndef __GLIBC__
#error "hook/agenthook/fastpath needs glibc: its constructor reads argc and argv"
#endif

#define MAX_STATE (64 * 1024)   /* agenthook.maxState */
#define MAX_REQUEST (72 * 1024) /* hookstart.MaxRequest */
#define ANSWER_MAX (16 * 1024)  /* hookstart.MaxAnswer */
#define TIMEOUT_SECONDS 5       /* agenthook.timeout */

static char state[MAX_STATE + 1];
static char request[MAX_REQUEST];

#define fail(...) ns_fail("northstar-agent-hook", __VA_ARGS__)

// read_state reads stdin to its end, at most MAX_STATE + 1 bytes (one
// more than the Go hook takes, so that it refuses the same states).
static size_t read_state(void)
{
	size_t n = 0;
	while (n < sizeof(state)) {
		ssize_t r = read(STDIN_FILENO, state + n, sizeof(state) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail("read state: %s", strerror(errno));
		if (r == 0)
			break;
		n += r;
	}
	return n;
}

// give_back leaves the n bytes of state read on stdin again, in a memfd,
// for the Go hook to read.
static void give_back(size_t n)
{
	int fd = memfd_create("northstar-state", MFD_CLOEXEC);
	if (fd < 0)
		fail("memfd for the state: %s", strerror(errno));
	for (size_t off = 0; off < n;) {
		ssize_t w = write(fd, state + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("memfd for the state: %s", strerror(errno));
		off += w;
	}
	if (lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, STDIN_FILENO) < 0)
		fail("memfd for the state: %s", strerror(errno));
	close(fd);
}

// parse_args reads the hook's arguments as agenthook's flag set does,
// for the forms hook files use: --config PATH (or -config, or =PATH) and
// --host-wide. 0 for anything else, which the Go hook reads.
static int parse_args(int argc, char **argv, const char **config, int *host_wide)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || a[1] == 0 || strcmp(a, "--") == 0)
			return 0;
		const char *name = a + 1 + (a[1] == '-');
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		if (len == 6 && strncmp(name, "config", 6) == 0) {
			if (eq)
				*config = eq + 1;
			else if (i + 1 < argc)
				*config = argv[++i];
			else
				return 0;
		} else if (!eq && strcmp(name, "host-wide") == 0)
			*host_wide = 1;
		else
			return 0;
	}
	return 1;
}

// find_agent is agenthook's ask up to the request: 1, the config's
// absolute path in config and the agent's socket in socket_path, when the
// arguments and the config are as this reader expects; 0 otherwise, with
// stdin untouched.
static int find_agent(int argc, char **argv, char *config, char *socket_path)
{
	const char *flag = NULL;
	int host_wide = 0;
	return parse_args(argc, argv, &flag, &host_wide) && (!host_wide || ns_host_root()) &&
	       ns_config_path(flag, 1, config, NS_PATH_BUF) && ns_agent_socket(config, socket_path, NS_PATH_BUF);
}

// declined is why the agent did not serve the start this fast path asked
// for, once has_declined is set: the Go hook then does not ask again.
static char declined[ANSWER_MAX + NS_WHY_BUF];
static int has_declined;

// northstar_agent_hook_declined is declined, NULL when the fast path did
// not ask the agent (package fastpath's Declined).
const char *northstar_agent_hook_declined(void)
{
	return has_declined ? declined : NULL;
}

__attribute__((constructor)) static void northstar_agent_hook_fast_path(int argc, char **argv, char **envp)
{
	char config[NS_PATH_BUF], socket_path[NS_PATH_BUF], answer[ANSWER_MAX + 1], why[NS_WHY_BUF];
	if (getenv("NORTHSTAR_AGENT_HOOK_NO_FAST_PATH") || !find_agent(argc, argv, config, socket_path))
		return;
	size_t n = read_state();
	int head = snprintf(request, sizeof(request), "H%s%c%d%c", config, 0, (int)getppid(), 0);
	if (n > MAX_STATE || head <= 0 || (size_t)head + n > sizeof(request)) {
		// The Go hook refuses the state, as it would have.
		give_back(n);
		return;
	}
	memcpy(request + head, state, n);
	int fd = ns_ask(socket_path, request, head + n, TIMEOUT_SECONDS, why);
	has_declined = 1;
	if (fd < 0) {
		snprintf(declined, sizeof(declined), "%s", why);
		give_back(n);
		return;
	}
	// An answer longer than the Go hook reads is cut where it cuts it.
	ssize_t r = ns_answer(fd, answer, sizeof(answer));
	if (r < 0)
		fail("the agent at %s gave no answer: %s", socket_path, strerror(errno));
	if (r == 0)
		snprintf(declined, sizeof(declined), "the agent at %s closed the connection without an answer", socket_path);
	else if (answer[0] == 'y')
		_exit(0);
	else if (answer[0] == 'e')
		fail("%s", answer + 1);
	else if (answer[0] == 'n')
		snprintf(declined, sizeof(declined), "%s", answer + 1);
	else
		fail("the agent at %s gave a malformed answer", socket_path);
	give_back(n);
}
