#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# build.sh OUTDIR — builds northstar_<version>_<arch>.deb into OUTDIR with
# nfpm (packaging/deb/nfpm.yaml), and prints its path. `make deb` runs it.
# The binaries are built as `make build` builds them (static, cgo-free),
# stripped as Debian wants them.
#
# Environment:
#   DEB_VERSION  the package version (default: the Makefile's)
#   TOOLS_DIR    where install-tools.sh keeps nfpm (default /opt/northstar-tools,
#                or ~/.cache/northstar-tools when that is not writable)
set -euo pipefail

readonly PROG=${0##*/}
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

[[ $# -eq 1 ]] || die "usage: $PROG OUTDIR"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
: "${DEB_VERSION:?DEB_VERSION is not set (make deb sets it)}"


if [[ -z ${TOOLS_DIR:-} ]]; then
	TOOLS_DIR=/opt/northstar-tools
	if ! { [[ -w $TOOLS_DIR ]] || { [[ ! -e $TOOLS_DIR ]] && [[ -w $(dirname "$TOOLS_DIR") ]]; }; }; then
		TOOLS_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/northstar-tools
	fi
fi
export TOOLS_DIR
nfpm=$("$top/scripts/install-tools.sh" --print nfpm)
"$top/scripts/install-tools.sh" nfpm

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for b in northstar-hook northstarctl northstar-runtime; do
	(cd "$top" && CGO_ENABLED=0 "${GO:-go}" build -trimpath -ldflags '-s -w' -o "$stage/$b" "./cmd/$b") ||
		die "go build ./cmd/$b failed"
done
# The shim's start and the agent hook have a fast path in C
# (shim/fastpath, hook/agenthook/fastpath): cgo, static.
for b in containerd-shim-northstar-v2 northstar-agent-hook; do
	"$top/scripts/build-cgo.sh" "$b" "$stage/$b" '-s -w' || die "go build ./cmd/$b failed"
done
# The unit of the source tree, with Debian's paths.
sed 's|/usr/local/bin/|/usr/bin/|g' "$top/contrib/systemd/northstar-agent.service" >"$stage/northstar-agent.service"
cp "$here"/nfpm.yaml "$here"/northstar.json "$here"/config.toml "$here"/copyright "$here"/lintian-overrides \
	"$here"/postinst "$here"/prerm "$here"/postrm "$stage/"

mkdir -p "$stage/man"
for m in "$here"/man/*.8; do
	name=$(basename "$m")
	gzip -9n <"$m" >"$stage/man/$name.gz"
done
# northstarctl's page is its --help, so it cannot fall behind the code.
{
	printf '.TH NORTHSTARCTL 8 "" "northstar %s" "System Administration"\n' "$DEB_VERSION"
	printf '.SH NAME\nnorthstarctl \\- set up, check and run northstar (the lifecycle secret of OCI containers)\n'
	printf '.SH SYNOPSIS\n.B northstarctl\n[\\fB\\-\\-config\\fR \\fIPATH\\fR] \\fICOMMAND\\fR [\\fIflags\\fR]\n'
	printf '.SH DESCRIPTION\nThe commands, as \\fBnorthstarctl \\-\\-help\\fR prints them; every command takes \\fB\\-\\-help\\fR.\n.PP\n.nf\n'
	"$stage/northstarctl" --help | sed 's/\\/\\\\/g; s/^\./\\\&./; s/-/\\-/g'
	printf '.fi\n.SH FILES\n.TP\n.I /etc/northstar/config.toml\nthe settings.\n.TP\n.I /var/lib/northstar\nthe sealed secret and the audit log.\n'
	printf '.SH SEE ALSO\n.BR northstar-hook (8),\n.BR northstar-agent-hook (8),\n.BR containerd-shim-northstar-v2 (8),\n.BR northstar-runtime (8)\n'
} | gzip -9n >"$stage/man/northstarctl.8.gz"

commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
	printf 'northstar (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
	printf '  * Built from the northstar source tree, commit %s.\n\n' "$commit"
	printf ' -- northstar developers <northstar@northstar-oci.github.io>  %s\n' "$(date -R -u -d "@$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)")"
} | gzip -9n >"$stage/changelog.gz"

case $(uname -m) in
x86_64) DEB_ARCH=amd64 ;;
aarch64) DEB_ARCH=arm64 ;;
*) die "no Debian architecture for $(uname -m)" ;;
esac
export DEB_ARCH DEB_VERSION
deb=$out/northstar_${DEB_VERSION}_${DEB_ARCH}.deb
(cd "$stage" && "$nfpm" package --config nfpm.yaml --packager deb --target "$deb") >&2
echo "$deb"
