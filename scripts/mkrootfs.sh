#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# mkrootfs.sh DIR [extra static binaries...]
#
# Builds (or refreshes) a tiny container root filesystem in DIR from the
# static busybox of Debian's busybox-static package: /bin/busybox plus a
# symlink for every applet (sh, cat, ls, id, stat, mount, grep, sleep, touch,
# echo, test, ...), /etc/passwd and /etc/group with root (0) and user (1000),
# the mount points runc needs, and the given extra binaries copied into /bin
# (they must be statically linked: the rootfs has no libc).
#
# Environment:
#   BUSYBOX                  busybox binary to use        (default: /bin/busybox)
#   MKROOTFS_OWNER           chown -R the rootfs to this user[:group] at the end,
#                            e.g. nstest:nstest for rootless runs where the
#                            container's root must own (and may write) its rootfs
#   MKROOTFS_ALLOW_DYNAMIC=1 copy dynamically linked extra binaries anyway
set -euo pipefail

readonly PROG=${0##*/}
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
usage() {
	printf 'usage: %s DIR [extra-static-binary...]\n' "$PROG" >&2
	exit 2
}

[[ $# -ge 1 && -n $1 ]] || usage
case $1 in -h | --help) usage ;; esac
ROOTFS=$1
shift
[[ $ROOTFS != / ]] || die "refusing to use / as rootfs"

BUSYBOX=${BUSYBOX:-/bin/busybox}
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (apt-get install busybox-static, or run scripts/setup.sh)"

is_static() {
	local out
	out=$(LC_ALL=C ldd "$1" 2>&1 || true)
	[[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]]
}
is_static "$BUSYBOX" || die "$BUSYBOX is dynamically linked; install busybox-static (not busybox)"

for bin in "$@"; do
	[[ -f $bin && -x $bin ]] || die "extra binary $bin: not an executable file"
	if ! is_static "$bin" && [[ ${MKROOTFS_ALLOW_DYNAMIC:-0} != 1 ]]; then
		die "extra binary $bin is dynamically linked (build it with CGO_ENABLED=0 / -static, or set MKROOTFS_ALLOW_DYNAMIC=1)"
	fi
done

mkdir -p "$ROOTFS"
cd "$ROOTFS"

install -d -m 0755 bin etc proc sys dev dev/pts dev/shm dev/mqueue run root home home/user var usr
install -d -m 1777 tmp var/tmp
chmod 0700 root
for l in sbin usr/bin usr/sbin; do
	[[ -L $l || ! -e $l ]] || die "$ROOTFS/$l exists and is not a symlink"
done
ln -sfn bin sbin
ln -sfn ../bin usr/bin
ln -sfn ../bin usr/sbin

install -m 0755 "$BUSYBOX" bin/busybox.new
mv -f bin/busybox.new bin/busybox
mapfile -t applets < <(bin/busybox --list)
[[ ${#applets[@]} -gt 10 ]] || die "$BUSYBOX --list returned too few applets"
links=()
for a in "${applets[@]}"; do
	[[ $a == busybox || $a == */* || -z $a ]] && continue
	# do not replace an extra binary of the same name copied earlier
	if [[ -e bin/$a && ! -L bin/$a ]]; then continue; fi
	links+=("bin/$a")
done
# One process for all ~270 links (perl-base is essential on Debian): an
# `ln` per applet costs seconds on a loaded machine.
if command -v perl >/dev/null; then
	perl -e 'for (@ARGV) { unlink; symlink("busybox", $_) or die "symlink $_: $!\n" }' "${links[@]}" ||
		die "cannot create the applet links"
else
	for l in "${links[@]}"; do ln -sfn busybox "$l"; done
fi

for bin in "$@"; do
	name=${bin##*/}
	rm -f "bin/$name"
	install -m 0755 "$bin" "bin/$name"
done

cat >etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >etc/group <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
cat >etc/hosts <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
: >etc/resolv.conf
printf 'northstar\n' >etc/hostname
chmod 0644 etc/passwd etc/group etc/hosts etc/resolv.conf etc/hostname
chown 1000:1000 home/user 2>/dev/null || true

if [[ -n ${MKROOTFS_OWNER:-} ]]; then
	chown -R "$MKROOTFS_OWNER" . || die "chown -R $MKROOTFS_OWNER $ROOTFS failed"
fi
printf '%s: rootfs ready in %s (%d busybox applets, %d extra binaries)\n' \
	"$PROG" "$ROOTFS" "${#applets[@]}" "$#" >&2
