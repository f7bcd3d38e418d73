#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# mkimage.sh ROOTFS NAME OUT.tar
#
# Packs the directory ROOTFS (e.g. made by mkrootfs.sh) as a single-layer OCI
# image archive (OCI image layout in a tar) named NAME, with plain tar and
# sha256sum — no registry, no image builder.  Import and run it with:
#   ctr images import OUT.tar          # creates image NAME (and unpacks it)
#   ctr run --rm NAME id /bin/sh -c ...
# NAME should be a full reference, e.g. docker.io/northstar/busybox:test or
# localhost/northstar/busybox:test.  File owners in the layer are recorded as
# numeric ids relative to ROOTFS's owner-agnostic view: every file is stored as
# owned by 0:0 except files owned by uid/gid 1000 (kept), so the rootfs may be
# owned by root or by the rootless user.  Deterministic: same ROOTFS and NAME
# give a byte-identical OUT.tar.
#
# Environment:
#   IMAGE_CMD   JSON array for the image's default Cmd (default ["/bin/sh"])
#   IMAGE_ENV   JSON array for the image's Env (default PATH only)
#   IMAGE_USER  the image's User, e.g. 1000:1000 (default: none = root).
#               ctr 1.6 `run` has no --user flag: this is how to get a
#               non-root container process from ctr.
set -euo pipefail

readonly PROG=${0##*/}
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
usage() {
	printf 'usage: %s ROOTFS NAME OUT.tar\n' "$PROG" >&2
	exit 2
}

[[ $# -eq 3 && -n $1 && -n $2 && -n $3 ]] || usage
ROOTFS=$1
NAME=$2
OUT=$3
[[ -d $ROOTFS ]] || die "$ROOTFS is not a directory"
[[ -x $ROOTFS/bin/sh || -L $ROOTFS/bin/sh ]] || printf '%s: warning: %s has no /bin/sh\n' "$PROG" "$ROOTFS" >&2
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]] || die "invalid image name: $NAME"
for c in tar sha256sum stat; do
	command -v "$c" >/dev/null || die "$c not found"
done

case $(uname -m) in
x86_64) ARCH=amd64 ;;
aarch64) ARCH=arm64 ;;
armv7l) ARCH=arm ;;
*) ARCH=$(uname -m) ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mkimage.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

BLOBS=$WORK/blobs/sha256
mkdir -p "$BLOBS"

# put_blob FILE: moves FILE into blobs/, prints "DIGEST SIZE"
put_blob() {
	local digest size
	digest=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv -f "$1" "$BLOBS/$digest"
	printf 'sha256:%s %s\n' "$digest" "$size"
}

# Layer: uncompressed tar, reproducible (sorted, fixed mtime, numeric 0:0
# owners except 1000), with the mount point directories but not their content.
# Ownership is mapped with --owner/--group only for non-1000 files: GNU tar
# cannot do per-file mapping, so use --owner-map/--group-map.
OWNER_MAP=$WORK/owner.map
GROUP_MAP=$WORK/group.map
: >"$OWNER_MAP"
: >"$GROUP_MAP"
while read -r id; do
	[[ $id == 1000 ]] && printf '+%s\t+1000:1000\n' "$id" >>"$OWNER_MAP" && continue
	printf '+%s\t+0:0\n' "$id" >>"$OWNER_MAP"
done < <(find "$ROOTFS" -printf '%U\n' | sort -u)
while read -r id; do
	[[ $id == 1000 ]] && printf '+%s\t+1000:1000\n' "$id" >>"$GROUP_MAP" && continue
	printf '+%s\t+0:0\n' "$id" >>"$GROUP_MAP"
done < <(find "$ROOTFS" -printf '%G\n' | sort -u)

tar --create --file "$WORK/layer.tar" --directory "$ROOTFS" \
	--sort=name --mtime=@0 --numeric-owner \
	--owner-map="$OWNER_MAP" --group-map="$GROUP_MAP" \
	--format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
	--exclude=./proc/* --exclude=./sys/* \
	. || die "tar of $ROOTFS failed"
read -r LAYER_DIGEST LAYER_SIZE < <(put_blob "$WORK/layer.tar")

IMAGE_CMD=${IMAGE_CMD:-'["/bin/sh"]'}
IMAGE_ENV=${IMAGE_ENV:-'["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'}
IMAGE_USER=${IMAGE_USER:-}
[[ $IMAGE_USER =~ ^[A-Za-z0-9_.:-]*$ ]] || die "invalid IMAGE_USER: $IMAGE_USER"
printf '{"architecture":"%s","os":"linux","config":{"User":"%s","Env":%s,"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created_by":"northstar scripts/mkimage.sh"}]}' \
	"$ARCH" "$IMAGE_USER" "$IMAGE_ENV" "$IMAGE_CMD" "$LAYER_DIGEST" >"$WORK/config.json"
read -r CONFIG_DIGEST CONFIG_SIZE < <(put_blob "$WORK/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
	"$CONFIG_DIGEST" "$CONFIG_SIZE" "$LAYER_DIGEST" "$LAYER_SIZE" >"$WORK/manifest.json"
read -r MANIFEST_DIGEST MANIFEST_SIZE < <(put_blob "$WORK/manifest.json")

TAG=${NAME##*:}
[[ $TAG != "$NAME" && $TAG != */* ]] || TAG=latest
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
	"$MANIFEST_DIGEST" "$MANIFEST_SIZE" "$ARCH" "$NAME" "$TAG" >"$WORK/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$WORK/oci-layout"

rm -f "$OWNER_MAP" "$GROUP_MAP"
OUT_TMP=$OUT.tmp.$$
tar --create --file "$OUT_TMP" --directory "$WORK" --sort=name --mtime=@0 \
	--owner=0 --group=0 --numeric-owner oci-layout index.json blobs ||
	die "cannot write $OUT"
mv -f "$OUT_TMP" "$OUT"
printf '%s: %s -> %s (manifest %s, layer %s bytes)\n' "$PROG" "$NAME" "$OUT" "$MANIFEST_DIGEST" "$LAYER_SIZE" >&2
