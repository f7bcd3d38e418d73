#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# swtpm.sh start|stop|status DIR
#
# Runs a software TPM 2.0 (swtpm) for tests and the demo:
#   DIR/swtpm.sock   TPM data channel (unixio; northstar config: path = "unix:DIR/swtpm.sock")
#   DIR/swtpm.ctrl   swtpm control channel (NOT the MS platform protocol);
#                    DIR/swtpm.sock.ctrl -> swtpm.ctrl for tpm2-tools:
#                    tpm2_getrandom -T "swtpm:path=DIR/swtpm.sock" --hex 8
#   DIR/state/       persistent TPM state (SRK at 0x81000001 lives here)
#   DIR/swtpm.pid    pid of the daemon;   DIR/swtpm.log   its log
# Started with --flags not-need-init,startup-clear: usable at once, no
# TPM2_Startup or power-on needed.
#
# Who owns it: the swtpm process (and so its sockets, mode 0600) runs as
#   $SWTPM_USER if set, else, when run as root, as the owner of DIR, else as
#   the calling user.  So `install -d -o nstest DIR; swtpm.sh start DIR` as
#   root gives a TPM that rootless containerd/runc running as nstest can use.
# Idempotent: start on a running instance and stop on a stopped one succeed.
set -euo pipefail

readonly PROG=${0##*/}
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
usage() {
	printf 'usage: %s start|stop|status DIR\n' "$PROG" >&2
	exit 2
}

[[ $# -eq 2 && -n $2 ]] || usage
CMD=$1
DIR=$2
[[ $DIR == /* ]] || DIR=$PWD/$DIR
DIR=${DIR%/}

SOCK=$DIR/swtpm.sock
CTRL=$DIR/swtpm.ctrl
PIDFILE=$DIR/swtpm.pid
LOGFILE=$DIR/swtpm.log
STATE=$DIR/state
START_TIMEOUT=${SWTPM_START_TIMEOUT:-10} # seconds

# running_pid: prints the daemon's pid if it is alive (and really swtpm).
running_pid() {
	local pid comm
	[[ -s $PIDFILE ]] || return 1
	pid=$(<"$PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[[ $comm == swtpm* ]] && alive "$pid" || return 1
	printf '%s\n' "$pid"
}

# alive PID: true while PID exists and is not a zombie (our daemon's parent is
# init, which may reap it late).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != [ZX] ]]
}

cleanup_files() { rm -f "$PIDFILE" "$SOCK" "$CTRL" "$SOCK.ctrl"; }

do_start() {
	command -v swtpm >/dev/null || die "swtpm not found (apt-get install swtpm swtpm-tools, or run scripts/setup.sh)"
	local pid
	if pid=$(running_pid); then
		log "already running (pid $pid), socket $SOCK"
		return 0
	fi
	cleanup_files

	local me target
	me=$(id -un)
	mkdir -p "$DIR"
	if [[ -n ${SWTPM_USER:-} ]]; then
		target=$SWTPM_USER
	elif [[ $(id -u) -eq 0 ]]; then
		target=$(stat -c %U "$DIR")
	else
		target=$me
	fi
	id -u "$target" >/dev/null 2>&1 || die "user $target does not exist"

	local -a run=()
	if [[ $target != "$me" ]]; then
		[[ $(id -u) -eq 0 ]] || die "only root can start swtpm as $target"
		# hand DIR and an existing TPM state over to the user swtpm runs as
		chown "$target:$(id -gn "$target")" "$DIR"
		if [[ -e $STATE || -e $LOGFILE ]]; then
			chown -R "$target:$(id -gn "$target")" "$STATE" "$LOGFILE" 2>/dev/null || true
		fi
		run=(setpriv --reuid="$target" --regid="$(id -g "$target")" --init-groups --reset-env --)
	fi
	"${run[@]}" mkdir -p "$STATE" || die "cannot create $STATE as $target"
	"${run[@]}" test -w "$DIR" -a -w "$STATE" || die "$DIR is not writable by $target"

	# shellcheck disable=SC2054 # commas belong to swtpm's option syntax
	local -a args=(
		socket --tpm2
		--server "type=unixio,path=$SOCK,mode=0600"
		--ctrl "type=unixio,path=$CTRL,mode=0600"
		--tpmstate "dir=$STATE,mode=0600"
		--flags not-need-init,startup-clear
		--pid "file=$PIDFILE"
		--log "file=$LOGFILE"
		--daemon
	)
	"${run[@]}" "$(command -v swtpm)" "${args[@]}" ||
		die "swtpm failed to start; see $LOGFILE: $(tail -n 3 "$LOGFILE" 2>/dev/null | tr '\n' ' ')"

	local i
	for ((i = 0; i < START_TIMEOUT * 20; i++)); do
		if [[ -S $SOCK && -S $CTRL ]] && pid=$(running_pid); then
			# tpm2-tss's "swtpm:path=SOCK" TCTI expects the control socket at SOCK.ctrl
			"${run[@]}" ln -sfn "${CTRL##*/}" "$SOCK.ctrl"
			log "started (pid $pid, user $target), socket $SOCK"
			return 0
		fi
		sleep 0.05
	done
	do_stop >/dev/null 2>&1 || true
	die "swtpm did not create $SOCK within ${START_TIMEOUT}s; see $LOGFILE"
}

do_stop() {
	local pid i
	if ! pid=$(running_pid); then
		cleanup_files
		log "not running"
		return 0
	fi
	# Graceful shutdown through the control channel saves the TPM state.
	if command -v swtpm_ioctl >/dev/null && [[ -S $CTRL ]]; then
		timeout 5 swtpm_ioctl --unix "$CTRL" -s >/dev/null 2>&1 || true
	fi
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		((i == 40)) && kill -TERM "$pid" 2>/dev/null
		sleep 0.05
	done
	if alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.1
	fi
	! alive "$pid" || die "swtpm (pid $pid) does not exit"
	cleanup_files
	log "stopped (pid $pid)"
}

do_status() {
	local pid
	if pid=$(running_pid); then
		printf 'running pid=%s socket=%s ctrl=%s\n' "$pid" "$SOCK" "$CTRL"
	else
		printf 'stopped\n'
		return 3
	fi
}

case $CMD in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
*) usage ;;
esac
