#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# setup.sh — prepare a Debian 12 machine for northstar's real-stack tests and
# demo (runc, rootless containerd, swtpm).  Run as root.  Idempotent; returns
# in well under 2 s when everything is already in place.
#
#   - installs the Debian packages the stack needs (apt-get update only when
#     something is missing);
#   - keeps the distribution's containerd service from running (we start our
#     own instances with scripts/rootless-containerd.sh);
#   - creates the unprivileged user $NSTEST_USER (default nstest) with a home
#     directory and subordinate uid/gid ranges for rootless runs;
#   - checks that unprivileged user namespaces are enabled.
#
# It builds nothing: `make test` runs scripts/install-tools.sh after it for
# the tools only the tests need; `make demo` needs none of them.
#
# Environment:
#   NSTEST_USER          user to create                  (default: nstest)
#   NSTEST_SUBID_START   first subordinate uid/gid        (default: 200000)
#   NSTEST_SUBID_COUNT   number of subordinate uids/gids  (default: 65536)
#   SETUP_EXTRA_PACKAGES extra Debian packages to install (space separated)
set -euo pipefail

readonly PROG=${0##*/}
NSTEST_USER=${NSTEST_USER:-nstest}
NSTEST_SUBID_START=${NSTEST_SUBID_START:-200000}
NSTEST_SUBID_COUNT=${NSTEST_SUBID_COUNT:-65536}

PACKAGES=(
	runc containerd rootlesskit slirp4netns uidmap
	swtpm swtpm-tools tpm2-tools busybox-static
	libssl-dev gcc iproute2 time
	util-linux procps tar coreutils
	shellcheck podman containernetworking-plugins curl systemd crun
	lintian linux-perf docker.io
)
if [[ -n ${SETUP_EXTRA_PACKAGES:-} ]]; then
	read -r -a extra <<<"$SETUP_EXTRA_PACKAGES"
	PACKAGES+=("${extra[@]}")
fi

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must be run as root (try: sudo $0)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian (12) only"

POLICY_RC=/usr/sbin/policy-rc.d
policy_rc_ours=0
cleanup() {
	if [[ $policy_rc_ours -eq 1 ]]; then
		rm -f "$POLICY_RC"
	fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- packages
missing_packages() {
	local p status
	for p in "${PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[[ $status == installed ]] || printf '%s\n' "$p"
	done
}

install_packages() {
	local -a missing
	mapfile -t missing < <(missing_packages)
	[[ ${#missing[@]} -gt 0 ]] || return 0

	log "installing: ${missing[*]}"
	# Keep maintainer scripts from starting services (the containerd package
	# would start a system containerd).  Only if no policy is in place yet.
	if [[ ! -e $POLICY_RC ]]; then
		printf '#!/bin/sh\n# temporary, written by northstar scripts/setup.sh\nexit 101\n' >"$POLICY_RC"
		chmod 0755 "$POLICY_RC"
		policy_rc_ours=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q || die "apt-get update failed"
	apt-get install -y -q --no-install-recommends "${missing[@]}" ||
		die "apt-get install failed for: ${missing[*]}"
	if [[ $policy_rc_ours -eq 1 ]]; then
		rm -f "$POLICY_RC"
		policy_rc_ours=0
	fi

	mapfile -t missing < <(missing_packages)
	[[ ${#missing[@]} -eq 0 ]] || die "still not installed after apt-get: ${missing[*]}"
}

# --------------------------------------------------- system containerd off
disable_system_containerd() {
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		if systemctl --quiet is-enabled containerd.service 2>/dev/null ||
			systemctl --quiet is-active containerd.service 2>/dev/null; then
			log "stopping and disabling the system containerd.service (we run our own instances)"
			systemctl disable --now containerd.service ||
				die "could not stop/disable containerd.service"
		fi
	fi
	# Without systemd nothing starts containerd (the Debian package ships no
	# init.d script); just tell the user if one is running anyway.
	if [[ -S /run/containerd/containerd.sock ]] && pgrep -x containerd >/dev/null; then
		log "warning: a containerd is running with /run/containerd/containerd.sock;" \
			"northstar's scripts do not use it, stop it if it interferes"
	fi
}

# ------------------------------------------------------------- test user
subid_overlaps() { # file user start count -> 0 if another user's range overlaps
	awk -F: -v u="$2" -v s="$3" -v c="$4" '
		$1 != u && NF >= 3 && $2 < s + c && s < $2 + $3 { found = 1 }
		END { exit !found }' "$1"
}

ensure_user() {
	if ! id -u "$NSTEST_USER" >/dev/null 2>&1; then
		log "creating user $NSTEST_USER"
		# -K SUB_*_COUNT=0: no automatic subid allocation, we add a fixed range.
		useradd --create-home --home-dir "/home/$NSTEST_USER" \
			--shell /usr/sbin/nologin --user-group \
			-K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$NSTEST_USER" ||
			die "useradd $NSTEST_USER failed"
	fi
	local home
	home=$(getent passwd "$NSTEST_USER" | cut -d: -f6)
	if [[ ! -d $home ]]; then
		install -d -m 0700 -o "$NSTEST_USER" -g "$(id -g "$NSTEST_USER")" "$home"
	fi

	local f opt last=$((NSTEST_SUBID_START + NSTEST_SUBID_COUNT - 1))
	for f in /etc/subuid /etc/subgid; do
		[[ -e $f ]] || install -m 0644 /dev/null "$f"
		if grep -q "^${NSTEST_USER}:" "$f" ||
			grep -q "^$(id -u "$NSTEST_USER"):" "$f"; then
			continue
		fi
		if subid_overlaps "$f" "$NSTEST_USER" "$NSTEST_SUBID_START" "$NSTEST_SUBID_COUNT"; then
			die "$f: range $NSTEST_SUBID_START-$last overlaps another user's range; set NSTEST_SUBID_START"
		fi
		if [[ $f == /etc/subuid ]]; then opt=--add-subuids; else opt=--add-subgids; fi
		log "adding $f range $NSTEST_SUBID_START-$last for $NSTEST_USER"
		usermod "$opt" "$NSTEST_SUBID_START-$last" "$NSTEST_USER" ||
			die "usermod $opt failed"
	done
}

# ----------------------------------------------------- kernel prerequisites
check_userns() {
	local f=/proc/sys/kernel/unprivileged_userns_clone
	if [[ -e $f && $(<"$f") != 1 ]]; then
		log "enabling unprivileged user namespaces (kernel.unprivileged_userns_clone=1)"
		echo 1 >"$f" || die "cannot enable kernel.unprivileged_userns_clone"
	fi
	f=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
	if [[ -e $f && $(<"$f") != 0 ]]; then
		log "allowing unprivileged user namespaces under AppArmor (kernel.apparmor_restrict_unprivileged_userns=0)"
		echo 0 >"$f" || die "cannot set kernel.apparmor_restrict_unprivileged_userns"
	fi
	f=/proc/sys/user/max_user_namespaces
	if [[ -e $f && $(<"$f") -lt 64 ]]; then
		die "user.max_user_namespaces is $(<"$f"); rootless containers need user namespaces (sysctl -w user.max_user_namespaces=15000)"
	fi
	local b
	for b in /usr/bin/newuidmap /usr/bin/newgidmap; do
		[[ -u $b ]] || getcap "$b" 2>/dev/null | grep -q cap_set ||
			die "$b is neither setuid nor has file capabilities (reinstall uidmap)"
	done
}

install_packages
disable_system_containerd
ensure_user
check_userns
# The tools only the tests need (containerd 2.x, crictl, spire-agent, nfpm)
# are built by scripts/install-tools.sh, which `make test` runs after this:
# the demo needs none of them.
log "ok: packages installed, user $NSTEST_USER ($(id -u "$NSTEST_USER")) ready," \
	"subuid $(grep "^${NSTEST_USER}:" /etc/subuid | cut -d: -f2,3 || echo '?')"
