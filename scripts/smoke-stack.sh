#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# smoke-stack.sh — check that the real stack works on this machine, with the
# exact commands the integration tests and the demo use.  Run as root after
# scripts/setup.sh.  Everything happens in a fresh temp dir that is removed
# (and every process stopped) on exit.  Exit 0 = all checks passed.
#
#   1. swtpm as $NSTEST_USER, reachable by that user (tpm2_getrandom)
#   2. rootless containerd: ctr run --rootfs (runc shim), image import + run,
#      the northstar runtime name resolved through NORTHSTAR_BIN (with a
#      stand-in shim that execs the runc shim), restart-containerd
#   3. runc (no containerd) inside the same rootlesskit namespaces
#   4. plain rootless runc (runc spec --rootless) as $NSTEST_USER
set -euo pipefail

readonly PROG=${0##*/}
SCRIPTS=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
NSTEST_USER=${NSTEST_USER:-nstest}
export NSTEST_USER

die() {
	printf '%s: FAIL: %s\n' "$PROG" "$*" >&2
	exit 1
}
ok() { printf '%s: ok: %s\n' "$PROG" "$*" >&2; }
now() { date +%s%N; }
ms_since() { echo $((($(now) - $1) / 1000000)); }

[[ $(id -u) -eq 0 ]] || die "run as root"
id -u "$NSTEST_USER" >/dev/null 2>&1 || die "user $NSTEST_USER missing: run scripts/setup.sh"

WORK=$(mktemp -d /tmp/nss.XXXXXX) # short: unix socket paths are limited
chmod 0755 "$WORK"
chown "$NSTEST_USER:" "$WORK"
CTD=$WORK/ctd
TPM=$WORK/tpm
cleanup() {
	local rc=$?
	"$SCRIPTS/rootless-containerd.sh" stop "$CTD" >/dev/null 2>&1 || true
	"$SCRIPTS/swtpm.sh" stop "$TPM" >/dev/null 2>&1 || true
	rm -rf "$WORK"
	if [[ $rc -eq 0 ]]; then
		printf '%s: all checks passed\n' "$PROG" >&2
	else
		printf '%s: FAILED (rc %d)\n' "$PROG" "$rc" >&2
	fi
}
trap cleanup EXIT

AS_USER=(setpriv "--reuid=$NSTEST_USER" "--regid=$(id -g "$NSTEST_USER")" --init-groups)
RC=("$SCRIPTS/rootless-containerd.sh")
X=("${RC[@]}" exec "$CTD")
# ctr on this cgroup-v1 host, rootless: no cgroup path, no CPU shares
RUNFLAGS=(--rm --cgroup "" --cpu-shares 0)

# edit_spec FILE ARG...: terminal off, process.args replaced (plain sed: runc
# spec's formatting is stable; no jq/python needed)
edit_spec() {
	local f=$1 args='' a
	shift
	for a in "$@"; do args+="${args:+, }\"$a\""; done
	sed -i -e 's/"terminal": true/"terminal": false/' \
		-e '/"args": \[/,/\]/ { /"args": \[/! { /\]/! d } }' \
		-e "s|\"args\": \\[|\"args\": [ $args|" "$f"
}

# ---------------------------------------------------------------- 1. swtpm
install -d -o "$NSTEST_USER" -g "$(id -g "$NSTEST_USER")" "$TPM"
"$SCRIPTS/swtpm.sh" start "$TPM"
"${AS_USER[@]}" tpm2_getrandom -T "swtpm:path=$TPM/swtpm.sock" --hex 8 >/dev/null ||
	die "tpm2_getrandom as $NSTEST_USER"
ok "swtpm as $NSTEST_USER, socket $TPM/swtpm.sock usable by $NSTEST_USER"

# ----------------------------------------------------------- rootfs, image
MKROOTFS_OWNER="$NSTEST_USER:" "$SCRIPTS/mkrootfs.sh" "$WORK/rootfs"
"$SCRIPTS/mkimage.sh" "$WORK/rootfs" localhost/northstar/smoke:1 "$WORK/image.tar"
IMAGE_USER=1000:1000 "$SCRIPTS/mkimage.sh" "$WORK/rootfs" localhost/northstar/smoke:user "$WORK/image-user.tar"
chown "$NSTEST_USER:" "$WORK/image.tar" "$WORK/image-user.tar"

# ------------------------------------------------- 2. rootless containerd
BIN=$WORK/bin
install -d -m 0755 "$BIN"
# stand-in for the real shim: proves the runtime name -> binary resolution
# and the environment pass-through
cat >"$BIN/containerd-shim-northstar-v2" <<EOF
#!/bin/sh
echo "\$NORTHSTAR_CONFIG" >"$WORK/shim-saw-config"
exec containerd-shim-runc-v2 "\$@"
EOF
chmod 0755 "$BIN/containerd-shim-northstar-v2"
chown "$NSTEST_USER:" "$WORK"

t=$(now)
NORTHSTAR_BIN=$BIN NORTHSTAR_CONFIG=$WORK/northstar.toml "${RC[@]}" start "$CTD"
ok "rootless containerd started in $(ms_since "$t") ms"

out=$("${X[@]}" ctr run "${RUNFLAGS[@]}" --rootfs "$WORK/rootfs" smoke-rootfs /bin/cat /etc/passwd)
[[ $out == root:x:0:0:* ]] || die "ctr run --rootfs: unexpected output: $out"
ok "ctr run --rootfs (io.containerd.runc.v2)"

"${X[@]}" ctr images import "$WORK/image.tar" >/dev/null
"${X[@]}" ctr images import "$WORK/image-user.tar" >/dev/null
out=$("${X[@]}" ctr run "${RUNFLAGS[@]}" localhost/northstar/smoke:1 smoke-image cat /etc/passwd)
[[ $out == root:x:0:0:* ]] || die "ctr run IMAGE: unexpected output: $out"
out=$("${X[@]}" ctr run "${RUNFLAGS[@]}" localhost/northstar/smoke:user smoke-user id -u)
[[ $out == 1000 ]] || die "ctr run image with User 1000: got uid $out"
ok "ctr images import (OCI archive from mkimage.sh) + ctr run by name (overlayfs), image User honoured"

out=$("${X[@]}" ctr run "${RUNFLAGS[@]}" --runtime io.containerd.northstar.v2 \
	localhost/northstar/smoke:1 smoke-ns echo hello)
[[ $out == hello ]] || die "ctr run --runtime io.containerd.northstar.v2: $out"
[[ $(cat "$WORK/shim-saw-config") == "$WORK/northstar.toml" ]] ||
	die "NORTHSTAR_CONFIG did not reach the shim"
ok "--runtime io.containerd.northstar.v2 found via NORTHSTAR_BIN, NORTHSTAR_CONFIG reached the shim"

"${X[@]}" ctr run -d --null-io --cgroup "" --cpu-shares 0 localhost/northstar/smoke:1 smoke-long sleep 600
old=$(<"$CTD/containerd.pid")
t=$(now)
"${RC[@]}" restart-containerd "$CTD"
new=$(<"$CTD/containerd.pid")
[[ $old != "$new" ]] || die "restart-containerd kept pid $old"
"${X[@]}" ctr task ls | grep -q 'smoke-long.*RUNNING' || die "task lost across containerd restart"
[[ $(cat "$WORK/shim-saw-config") == "$WORK/northstar.toml" ]] || die "env lost across restart"
ok "restart-containerd in $(ms_since "$t") ms (pid $old -> $new), running task survived"

# ------------------------------ 3. runc inside the rootlesskit namespaces
B=$WORK/bundle-rk
install -d -o "$NSTEST_USER" "$B"
(cd "$B" && "${AS_USER[@]}" runc spec)
edit_spec "$B/config.json" /bin/cat /etc/passwd
sed -i "s|\"path\": \"rootfs\"|\"path\": \"$WORK/rootfs\"|" "$B/config.json"
out=$("${X[@]}" runc --root "$CTD/runc" run --bundle "$B" smoke-rk </dev/null)
[[ $out == root:x:0:0:* ]] || die "runc in rootlesskit: $out"
ok "runc (runc spec, terminal=false) inside rootlesskit, no containerd"

# ------------------------------------------------ 4. plain rootless runc
B=$WORK/bundle-rl
install -d -o "$NSTEST_USER" "$B"
(cd "$B" && "${AS_USER[@]}" runc spec --rootless)
edit_spec "$B/config.json" /bin/cat /etc/passwd
sed -i "s|\"path\": \"rootfs\"|\"path\": \"$WORK/rootfs\"|" "$B/config.json"
out=$(cd / && "${AS_USER[@]}" runc --root "$WORK/runc-rootless" run --bundle "$B" smoke-rl </dev/null)
[[ $out == root:x:0:0:* ]] || die "plain rootless runc: $out"
ok "plain rootless runc (runc spec --rootless, terminal=false) as $NSTEST_USER"

# ------------------------------------------------------------------ stop
"${X[@]}" ctr run -d --null-io --cgroup "" --cpu-shares 0 localhost/northstar/smoke:1 smoke-long2 sleep 600
userns=$(ps -o userns= -p "$(<"$CTD/rootlesskit/child_pid")" | tr -d ' ')
t=$(now)
"${RC[@]}" stop "$CTD"
ok "rootless containerd stopped in $(ms_since "$t") ms (with 2 running containers)"
left=$(ps -e -o userns=,stat=,pid=,args= | awk -v ns="$userns" '$1 == ns && $2 !~ /^Z/' || true)
[[ -z $left ]] || die "processes left in the rootless user namespace: $left"
"$SCRIPTS/swtpm.sh" stop "$TPM"
ok "nothing left running in the rootless namespace"
