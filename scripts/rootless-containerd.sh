#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# rootless-containerd.sh start|agent|stop|restart-containerd|exec|status|config|purge DIR [command...]
#
# Runs a private containerd as the unprivileged user $NSTEST_USER (default
# nstest) inside rootlesskit (user + mount + network namespace, slirp4netns),
# everything under DIR (which must be owned by that user, or not exist yet
# when run as root).  Run as root (the script switches to the user with
# setpriv) or as that user itself.
#
#   start               start rootlesskit (holding the namespaces with a
#                       `sleep infinity` child) and containerd inside it;
#                       no-op when already running.
#   agent               start the northstar agent ($NORTHSTAR_BIN/northstarctl
#                       agent) inside the namespaces with containerd's saved
#                       environment (NORTHSTAR_CONFIG unless set again here),
#                       where the hook runs; no-op when already running.  It
#                       outlives restart-containerd (it follows rotations) and
#                       goes with stop.  Log DIR/agent.log, pid DIR/agent.pid.
#   stop                stop the agent and containerd (SIGTERM), kill every process left in
#                       the rootlesskit user namespace (shims, containers,
#                       stray exec'd clients), stop rootlesskit.  No-op when
#                       stopped.  DIR's content (images, logs) is kept.
#   restart-containerd  stop containerd and start a new containerd process in
#                       the same namespaces; shims and containers keep running
#                       (containerd reconnects to them) — a new runtime
#                       lifecycle for northstar.
#   exec CMD...         run CMD as the user inside the namespaces (nsenter -U
#                       --preserve-credentials -m -n -t CHILD_PID), with
#                       CONTAINERD_ADDRESS=DIR/containerd.sock, so plain
#                       `ctr ...` talks to this containerd.  Exit status is CMD's.
#   status              print pids; exit 0 if containerd runs, 3 otherwise.
#   purge               stop, then remove DIR entirely (snapshots hold files
#                       owned by subordinate uids: as non-root this runs
#                       rm -rf inside a throwaway rootlesskit).
#   config              print the generated containerd config.toml.
#
# Layout: DIR/config.toml, DIR/containerd.sock (+.ttrpc), DIR/root,
#   DIR/state, DIR/containerd.{pid,log}, DIR/agent.{pid,log}, DIR/rootlesskit/ (rootlesskit
#   --state-dir: child_pid, api.sock), DIR/rootlesskit.{pid,log}, DIR/env.
#
# Environment:
#   NSTEST_USER        user to run as                               (default nstest)
#   NORTHSTAR_BIN      absolute dir prepended to containerd's PATH (where
#                      containerd-shim-northstar-v2 and northstar-hook live)
#   CONTAINERD_BIN     absolute dir holding another containerd, ctr and
#                      containerd-shim-runc-v2 (e.g. a 2.x build from
#                      scripts/install-tools.sh), used instead of Debian's
#   NORTHSTAR_CONFIG   passed to containerd (and so to the shims)
#   XDG_CONFIG_HOME, XDG_DATA_HOME  passed to containerd when set
#   NORTHSTAR_SHIM_NO_FAST_PATH     passed to containerd when set (the shim's
#                                   start then never takes its C fast path)
#   CONTAINERD_LOG_LEVEL            containerd log level             (default info)
#   ROOTLESSKIT_FLAGS  extra rootlesskit flags, word-split (e.g. "--debug")
#   START_TIMEOUT      seconds to wait for rootlesskit / containerd  (default 30)
# NORTHSTAR_BIN, CONTAINERD_BIN, NORTHSTAR_CONFIG, NORTHSTAR_SHIM_NO_FAST_PATH
# and the XDG variables given to `start` are saved in DIR/env and reused by `restart-containerd` and
# `exec` unless set again there.
set -euo pipefail

readonly PROG=${0##*/}
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
usage() {
	printf 'usage: %s start|agent|stop|restart-containerd|status|config|purge DIR\n       %s exec DIR COMMAND [ARG...]\n' "$PROG" "$PROG" >&2
	exit 2
}

[[ $# -ge 2 && -n $2 ]] || usage
CMD=$1
DIR=$2
shift 2
[[ $CMD == exec ]] && [[ $# -lt 1 ]] && usage
[[ $CMD == exec ]] || [[ $# -eq 0 ]] || usage
[[ $DIR == /* ]] || DIR=$PWD/$DIR
DIR=${DIR%/}

NSTEST_USER=${NSTEST_USER:-nstest}
START_TIMEOUT=${START_TIMEOUT:-30}
RK_STATE=$DIR/rootlesskit
RK_PIDFILE=$DIR/rootlesskit.pid
RK_LOG=$DIR/rootlesskit.log
CHILD_PIDFILE=$RK_STATE/child_pid
CTD_PIDFILE=$DIR/containerd.pid
CTD_LOG=$DIR/containerd.log
CTD_CONFIG=$DIR/config.toml
CTD_SOCK=$DIR/containerd.sock
AGENT_PIDFILE=$DIR/agent.pid
AGENT_LOG=$DIR/agent.log
ENVFILE=$DIR/env

# ------------------------------------------------------------------ helpers
USER_UID=$(id -u "$NSTEST_USER" 2>/dev/null) ||
	die "user $NSTEST_USER does not exist (run scripts/setup.sh as root)"
USER_GID=$(id -g "$NSTEST_USER")
USER_HOME=$(getent passwd "$NSTEST_USER" | cut -d: -f6)
MY_UID=$(id -u)

if [[ $MY_UID -eq $USER_UID ]]; then
	AS_USER=()
elif [[ $MY_UID -eq 0 ]]; then
	AS_USER=(setpriv "--reuid=$USER_UID" "--regid=$USER_GID" --init-groups)
else
	die "run as root or as $NSTEST_USER (not as $(id -un))"
fi

# alive PID: PID exists and is not a zombie (daemons' parent is init, which
# may reap late).
alive() {
	local stat
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != [ZX] ]]
}

# pid_of FILE COMM: prints the pid stored in FILE if that process is alive
# and its command name is COMM.
pid_of() {
	local pid comm
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[[ $comm == "$2" ]] && alive "$pid" || return 1
	printf '%s\n' "$pid"
}

# find_by_args COMM ARGS: pid of a live process named COMM whose command line
# is exactly ARGS (our own daemons, when their pid file was lost).
find_by_args() {
	local pid comm args
	while read -r pid comm args; do
		if [[ $comm == "$1" && $args == "$2" ]] && alive "$pid"; then
			printf '%s\n' "$pid"
			return 0
		fi
	done < <(ps -e -o pid=,comm=,args=)
	return 1
}

rk_pid() {
	pid_of "$RK_PIDFILE" rootlesskit ||
		find_by_args rootlesskit "rootlesskit $(rk_flags) sleep infinity"
}
ctd_pid() {
	pid_of "$CTD_PIDFILE" containerd ||
		find_by_args containerd "containerd --config $CTD_CONFIG"
}
agent_pid() {
	pid_of "$AGENT_PIDFILE" northstarctl
}
child_pid() {
	local pid
	pid=$(cat "$CHILD_PIDFILE" 2>/dev/null) || return 1
	alive "$pid" || return 1
	printf '%s\n' "$pid"
}

# wait_gone PID SECONDS: true once PID is gone.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		alive "$1" || return 0
		sleep 0.05
	done
	! alive "$1"
}

# terminate PID NAME SECONDS: SIGTERM, wait, SIGKILL.
terminate() {
	alive "$1" || return 0
	kill -TERM "$1" 2>/dev/null || true
	if ! wait_gone "$1" "$3"; then
		log "$2 (pid $1) ignored SIGTERM for $3 s, sending SIGKILL"
		kill -KILL "$1" 2>/dev/null || true
		wait_gone "$1" 5 || die "$2 (pid $1) does not exit"
	fi
}

# await PID NAME READY WHY: poll the command READY until it succeeds. If
# PID exits first, or START_TIMEOUT passes (PID is then terminated), die
# with NAME and the output of the command WHY (the end of its log).
await() {
	local pid=$1 name=$2 ready=$3 why=$4 i
	for ((i = 0; i < START_TIMEOUT * 50; i++)); do
		"$ready" && return 0
		if ! alive "$pid"; then
			wait "$pid" 2>/dev/null || true
			die "$name exited: $("$why")"
		fi
		sleep 0.02
	done
	terminate "$pid" "$name" 5
	die "$name did not become ready within ${START_TIMEOUT}s: $("$why")"
}

preflight() {
	local c
	if [[ -n ${SAVED[CONTAINERD_BIN]:-} ]]; then
		[[ ${SAVED[CONTAINERD_BIN]} == /* && -x ${SAVED[CONTAINERD_BIN]}/containerd ]] ||
			die "CONTAINERD_BIN=${SAVED[CONTAINERD_BIN]} is not an absolute dir holding containerd"
		PATH=${SAVED[CONTAINERD_BIN]}:$PATH
	fi
	for c in rootlesskit slirp4netns containerd ctr runc containerd-shim-runc-v2 \
		nsenter setpriv newuidmap newgidmap ps flock; do
		command -v "$c" >/dev/null || die "$c not found (run scripts/setup.sh as root)"
	done
	grep -q "^${NSTEST_USER}:\|^${USER_UID}:" /etc/subuid 2>/dev/null ||
		die "no /etc/subuid range for $NSTEST_USER (run scripts/setup.sh as root)"
	grep -q "^${NSTEST_USER}:\|^${USER_UID}:" /etc/subgid 2>/dev/null ||
		die "no /etc/subgid range for $NSTEST_USER (run scripts/setup.sh as root)"
	[[ $DIR =~ ^[A-Za-z0-9._/+-]+$ ]] || die "DIR may only contain A-Z a-z 0-9 . _ / + - (got $DIR)"
	# unix socket paths are limited to 107 bytes
	local longest=$CTD_SOCK.ttrpc
	((${#longest} <= 100)) || die "DIR is too long for unix socket paths ($longest is ${#longest} bytes, max ~100): use a shorter DIR"
	if [[ -n ${NORTHSTAR_BIN:-} ]]; then
		[[ $NORTHSTAR_BIN == /* ]] || die "NORTHSTAR_BIN must be an absolute path (got $NORTHSTAR_BIN)"
		[[ -d $NORTHSTAR_BIN ]] || die "NORTHSTAR_BIN=$NORTHSTAR_BIN is not a directory"
		"${AS_USER[@]}" test -x "$NORTHSTAR_BIN" || die "NORTHSTAR_BIN=$NORTHSTAR_BIN is not accessible by $NSTEST_USER"
	fi
	if [[ -n ${NORTHSTAR_CONFIG:-} && $NORTHSTAR_CONFIG != /* ]]; then
		die "NORTHSTAR_CONFIG must be an absolute path (got $NORTHSTAR_CONFIG)"
	fi
}

ensure_dir() {
	if [[ ! -d $DIR ]]; then
		[[ $MY_UID -eq 0 ]] || mkdir -p "$DIR"
		[[ $MY_UID -ne 0 ]] || install -d -m 0755 -o "$USER_UID" -g "$USER_GID" "$DIR"
	fi
	local owner
	owner=$(stat -c %u "$DIR")
	[[ $owner -eq $USER_UID ]] ||
		die "$DIR must be owned by $NSTEST_USER (uid $USER_UID), it is owned by uid $owner (chown $NSTEST_USER: $DIR)"
	"${AS_USER[@]}" test -w "$DIR" -a -x "$DIR" ||
		die "$DIR is not accessible by $NSTEST_USER (check the permissions of its parent directories)"
}

lock() {
	# fd 9 must not leak into the daemons: they are all started with 9>&-
	if [[ ! -e $DIR/.lock ]]; then "${AS_USER[@]}" touch "$DIR/.lock"; fi
	exec 9>>"$DIR/.lock"
	flock -w 120 9 || die "timed out waiting for the lock on $DIR/.lock"
}

# ------------------------------------------------------------- config.toml
write_config() {
	local arch
	arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
	"${AS_USER[@]}" tee "$CTD_CONFIG.tmp" >/dev/null <<EOF
# generated by northstar scripts/rootless-containerd.sh — do not edit
version = 2
root = "$DIR/root"
state = "$DIR/state"
# rootless: cannot lower OOM scores
oom_score = 0
# CRI (needs CNI), btrfs/zfs/devmapper/aufs snapshotters, tracing and /opt
# plugins are not needed here.  Do NOT disable io.containerd.runtime.v1.linux:
# containerd 1.6's tasks service fails to load without it.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CTD_SOCK"
  uid = 0
  gid = 0

[ttrpc]
  address = "$CTD_SOCK.ttrpc"

[debug]
  level = "${CONTAINERD_LOG_LEVEL:-info}"

# no cgroup for containerd itself (rootless, cgroup v1)
[cgroup]
  path = ""

[plugins]
  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/$arch"]
  # overlayfs works rootless on kernel >= 5.11 (userxattr); "native" as fallback
  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    root_path = ""
  [plugins."io.containerd.snapshotter.v1.native"]
    root_path = ""

# Runtimes: without the CRI plugin containerd 1.6 has no runtime table; a
# runtime v2 name is resolved to its shim binary on containerd's PATH:
#   io.containerd.runc.v2      -> containerd-shim-runc-v2      (default)
#   io.containerd.northstar.v2 -> containerd-shim-northstar-v2 (from NORTHSTAR_BIN)
# Select it per container: ctr run --runtime io.containerd.northstar.v2 ...
EOF
	"${AS_USER[@]}" mv -f "$CTD_CONFIG.tmp" "$CTD_CONFIG"
}

# ---------------------------------------------------------- environment
# Values for the containerd environment: from the caller, else from DIR/env.
SAVED_KEYS="NORTHSTAR_BIN CONTAINERD_BIN NORTHSTAR_CONFIG NORTHSTAR_SHIM_NO_FAST_PATH XDG_CONFIG_HOME XDG_DATA_HOME"
load_env() {
	local k v
	declare -gA SAVED=()
	if [[ -r $ENVFILE ]]; then
		while IFS='=' read -r k v; do
			[[ -n $k ]] && SAVED[$k]=$v
		done <"$ENVFILE"
	fi
	for k in $SAVED_KEYS; do
		if [[ -n ${!k:-} ]]; then SAVED[$k]=${!k}; fi
	done
}

save_env() {
	local k
	for k in $SAVED_KEYS; do
		if [[ -n ${SAVED[$k]:-} ]]; then printf '%s=%s\n' "$k" "${SAVED[$k]}"; fi
	done | "${AS_USER[@]}" tee "$ENVFILE" >/dev/null
}

# containerd_env: prints the KEY=VALUE words for env(1)
containerd_env() {
	local path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin k
	[[ -z ${SAVED[CONTAINERD_BIN]:-} ]] || path=${SAVED[CONTAINERD_BIN]}:$path
	[[ -z ${SAVED[NORTHSTAR_BIN]:-} ]] || path=${SAVED[NORTHSTAR_BIN]}:$path
	printf '%s\n' "PATH=$path" "HOME=$USER_HOME" "USER=$NSTEST_USER" "LOGNAME=$NSTEST_USER" \
		"ROOTLESSKIT_STATE_DIR=$RK_STATE" "ROOTLESSKIT_PARENT_EUID=$USER_UID" \
		"ROOTLESSKIT_PARENT_EGID=$USER_GID"
	for k in NORTHSTAR_CONFIG NORTHSTAR_SHIM_NO_FAST_PATH XDG_CONFIG_HOME XDG_DATA_HOME; do
		[[ -z ${SAVED[$k]:-} ]] || printf '%s=%s\n' "$k" "${SAVED[$k]}"
	done
}

# ------------------------------------------------------------ the daemons
rk_flags() {
	printf '%s\n' "--net=slirp4netns --disable-host-loopback --copy-up=/etc --copy-up=/run --state-dir=$RK_STATE${ROOTLESSKIT_FLAGS:+ $ROOTLESSKIT_FLAGS}"
}

start_rootlesskit() {
	local pid
	# stale leftovers from a crashed run
	rm -rf "$RK_STATE" "$RK_PIDFILE"
	: >"$RK_LOG"
	chown "$USER_UID:$USER_GID" "$RK_LOG" 2>/dev/null || true
	local -a flags
	read -r -a flags <<<"$(rk_flags)"
	# setsid: own session, so the caller's terminal/process group signals do
	# not reach it; all fds closed or redirected so callers capturing our
	# output do not hang.
	setsid "${AS_USER[@]}" env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME="$USER_HOME" USER="$NSTEST_USER" LOGNAME="$NSTEST_USER" \
		rootlesskit "${flags[@]}" sleep infinity \
		</dev/null >>"$RK_LOG" 2>&1 9>&- &
	pid=$!
	printf '%s\n' "$pid" >"$RK_PIDFILE"
	await "$pid" rootlesskit rk_ready rk_why
	log "rootlesskit running (pid $pid, child $(child_pid))"
}
rk_ready() { child_pid >/dev/null && [[ -S $RK_STATE/api.sock ]]; }
rk_why() { tail -n 5 "$RK_LOG" | tr '\n' ' '; }

start_containerd() {
	local child pid
	child=$(child_pid) || die "rootlesskit child is not running"
	write_config
	save_env
	rm -f "$CTD_SOCK" "$CTD_SOCK.ttrpc" "$CTD_PIDFILE"
	[[ -e $CTD_LOG ]] || "${AS_USER[@]}" touch "$CTD_LOG"
	# containerd 1.6 puts shim sockets in /run/containerd/s whatever its
	# state dir. --copy-up=/run shows the host's /run/containerd (if any,
	# e.g. from a rootful containerd) as a symlink to the host directory,
	# which the user cannot write: give containerd a private one in
	# rootlesskit's own /run tmpfs instead.
	"${AS_USER[@]}" nsenter -U --preserve-credentials -m -n -t "$child" --wd=/ -- \
		sh -c 'if [ -L /run/containerd ]; then rm -f /run/containerd; fi; mkdir -p -m 0711 /run/containerd' ||
		die "cannot create a private /run/containerd in the rootless namespace"
	local -a envs
	mapfile -t envs < <(containerd_env)
	# the chain setsid -> setpriv -> env -> nsenter -> containerd only execs,
	# so $! is containerd's pid.
	setsid "${AS_USER[@]}" env -i "${envs[@]}" \
		nsenter -U --preserve-credentials -m -n -t "$child" --wd=/ -- \
		containerd --config "$CTD_CONFIG" \
		</dev/null >>"$CTD_LOG" 2>&1 9>&- &
	pid=$!
	printf '%s\n' "$pid" >"$CTD_PIDFILE"
	await "$pid" containerd ctd_ready ctd_why
	log "containerd running (pid $pid), address $CTD_SOCK"
}
ctd_ready() { [[ -S $CTD_SOCK ]] && ctr --address "$CTD_SOCK" --timeout 2s version >/dev/null 2>&1; }
ctd_why() { printf 'see %s: ' "$CTD_LOG"; grep -E 'level=(error|fatal)|^[a-z]' "$CTD_LOG" | tail -n 5 | tr '\n' ' '; }

# start_agent: northstarctl agent in the namespaces, as containerd runs
# (same environment, so the same NORTHSTAR_CONFIG); ready once it logs
# that it serves.
start_agent() {
	local child pid ctl
	child=$(child_pid) || die "rootlesskit child is not running (use start)"
	[[ -n ${SAVED[NORTHSTAR_BIN]:-} ]] || die "agent needs NORTHSTAR_BIN (the directory holding northstarctl)"
	ctl=${SAVED[NORTHSTAR_BIN]}/northstarctl
	"${AS_USER[@]}" test -x "$ctl" || die "$ctl is not executable by $NSTEST_USER"
	if pid=$(agent_pid); then
		log "agent already running (pid $pid)"
		return 0
	fi
	rm -f "$AGENT_LOG"
	"${AS_USER[@]}" touch "$AGENT_LOG"
	local -a envs
	mapfile -t envs < <(containerd_env)
	setsid "${AS_USER[@]}" env -i "${envs[@]}" \
		nsenter -U --preserve-credentials -m -n -t "$child" --wd=/ -- \
		"$ctl" agent \
		</dev/null >>"$AGENT_LOG" 2>&1 9>&- &
	pid=$!
	printf '%s\n' "$pid" >"$AGENT_PIDFILE"
	await "$pid" agent agent_ready agent_why
	log "agent running (pid $pid)"
}
agent_ready() { grep -q '^agent: serving' "$AGENT_LOG" 2>/dev/null; }
agent_why() { tail -n 3 "$AGENT_LOG" | tr '\n' ' '; }

stop_containerd() {
	local pid
	if pid=$(ctd_pid); then
		terminate "$pid" containerd "${CONTAINERD_STOP_TIMEOUT:-15}"
		log "containerd stopped (pid $pid)"
	fi
	rm -f "$CTD_PIDFILE" "$CTD_SOCK" "$CTD_SOCK.ttrpc"
}

# kill_userns_procs NS KEEP: SIGKILL every live process in user namespace NS
# (shims, containers, exec'd clients) except rootlesskit's child KEEP and the
# `sleep infinity` it runs (KEEP=0: kill everything).
kill_userns_procs() {
	local ns=$1 keep=$2 pass p pid ppid pns stat
	[[ $ns =~ ^[0-9]+$ ]] || return 0
	for ((pass = 0; pass < 40; pass++)); do
		local -a victims=()
		while read -r pid ppid pns stat; do
			[[ $pns == "$ns" && $stat != [ZX]* ]] || continue
			[[ $pid != "$keep" && $ppid != "$keep" && $pid != "$$" ]] || continue
			victims+=("$pid")
		done < <(ps -e -o pid=,ppid=,userns=,stat=)
		[[ ${#victims[@]} -gt 0 ]] || return 0
		[[ $pass -gt 0 ]] || log "killing ${#victims[@]} process(es) left in the rootless namespace (shims, containers)"
		for p in "${victims[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
		sleep 0.05
	done
	log "warning: processes still alive in the rootless user namespace"
}

stop_all() {
	local pid child='' anchor='' ns='' keep=0
	# the namespace to clean: rootlesskit's child, or (rootlesskit crashed)
	# the containerd that still lives in it
	if child=$(child_pid); then
		anchor=$child
	elif pid=$(ctd_pid); then
		anchor=$pid
	fi
	if [[ -n $anchor ]]; then
		ns=$(ps -o userns= -p "$anchor" 2>/dev/null | tr -d ' ') || ns=''
	fi
	# rootlesskit alive: leave its child to it, so it exits cleanly
	if [[ -n $child ]] && rk_pid >/dev/null; then keep=$child; fi
	# The agent first, with SIGTERM: it syncs the audit log on the way out.
	if pid=$(agent_pid); then
		terminate "$pid" agent 10
		log "agent stopped (pid $pid)"
	fi
	rm -f "$AGENT_PIDFILE"
	stop_containerd
	if [[ -n $ns ]]; then
		kill_userns_procs "$ns" "$keep"
	fi
	if pid=$(rk_pid); then
		terminate "$pid" rootlesskit 10
		log "rootlesskit stopped (pid $pid)"
	fi
	rm -rf "$RK_STATE" "$RK_PIDFILE"
}

# ---------------------------------------------------------------- commands
cmd_start() {
	load_env
	preflight
	ensure_dir
	lock
	if rk_pid >/dev/null && child_pid >/dev/null; then
		if pid=$(ctd_pid); then
			log "already running (containerd pid $pid), address $CTD_SOCK"
			return 0
		fi
	else
		# half-dead leftovers (e.g. rootlesskit killed): clean up first
		stop_all
		start_rootlesskit
	fi
	start_containerd
}

cmd_agent() {
	load_env
	preflight
	lock
	start_agent
}

cmd_stop() {
	[[ ! -d $DIR ]] || lock
	# The agent counts: with no pid namespace it can outlive rootlesskit.
	if ! rk_pid >/dev/null && ! ctd_pid >/dev/null && ! child_pid >/dev/null && ! agent_pid >/dev/null; then
		rm -rf "$RK_STATE" "$RK_PIDFILE" "$CTD_PIDFILE" "$CTD_SOCK" "$CTD_SOCK.ttrpc" "$AGENT_PIDFILE"
		log "not running"
		return 0
	fi
	stop_all
}

cmd_restart_containerd() {
	load_env
	preflight
	lock
	if ! rk_pid >/dev/null || ! child_pid >/dev/null; then
		die "rootlesskit is not running in $DIR (use start)"
	fi
	local old=none
	old=$(ctd_pid) || old=none
	stop_containerd
	start_containerd
	log "containerd restarted (old pid $old, new pid $(<"$CTD_PIDFILE"))"
}

cmd_exec() {
	local child wd=/
	child=$(child_pid) || die "rootless containerd is not running in $DIR (use start)"
	load_env
	[[ -z ${SAVED[CONTAINERD_BIN]:-} ]] || export PATH=${SAVED[CONTAINERD_BIN]}:$PATH
	[[ -n ${NORTHSTAR_BIN:-} ]] && export PATH=$NORTHSTAR_BIN:$PATH
	export CONTAINERD_ADDRESS=$CTD_SOCK
	# keep the caller's working directory when the user can enter it
	if "${AS_USER[@]}" test -x "$PWD" 2>/dev/null; then wd=$PWD; fi
	exec "${AS_USER[@]}" env HOME="$USER_HOME" USER="$NSTEST_USER" LOGNAME="$NSTEST_USER" \
		nsenter -U --preserve-credentials -m -n -t "$child" --wd="$wd" -- "$@"
}

cmd_purge() {
	[[ -d $DIR ]] || return 0
	cmd_stop
	exec 9>&-
	# images/snapshots contain files owned by subordinate ids: only root, or
	# the user inside a user namespace with its subid mapping, can remove them
	if [[ $MY_UID -eq 0 ]]; then
		rm -rf "$DIR"
	else
		local tmp
		tmp=$(mktemp -d)
		rootlesskit --net=host --state-dir="$tmp/rk" rm -rf "$DIR" </dev/null >"$tmp/log" 2>&1 ||
			die "cannot remove $DIR: $(tail -n 3 "$tmp/log" | tr '\n' ' ')"
		rm -rf "$tmp"
	fi
	log "removed $DIR"
}

cmd_status() {
	local rk child ctd agent
	rk=$(rk_pid) || rk=-
	child=$(child_pid) || child=-
	ctd=$(ctd_pid) || ctd=-
	agent=$(agent_pid) || agent=-
	printf 'rootlesskit=%s child=%s containerd=%s agent=%s address=%s\n' "$rk" "$child" "$ctd" "$agent" "$CTD_SOCK"
	[[ $ctd != - ]] || return 3
}

cmd_config() {
	[[ -r $CTD_CONFIG ]] || die "no $CTD_CONFIG yet (start first)"
	cat "$CTD_CONFIG"
}

case $CMD in
start) cmd_start ;;
agent) cmd_agent ;;
stop) cmd_stop ;;
restart-containerd) cmd_restart_containerd ;;
purge) cmd_purge ;;
exec) cmd_exec "$@" ;;
status) cmd_status ;;
config) cmd_config ;;
*) usage ;;
esac
