#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# install-tools.sh — builds the tools Debian does not package, once, from the
# Go module proxy, into a cache that later runs reuse:
#
#   $TOOLS_DIR/containerd-v2.4.2/{containerd,containerd-shim-runc-v2,ctr}
#   $TOOLS_DIR/crictl-v1.37.0/crictl
#   $TOOLS_DIR/nfpm-v2.45.2/nfpm
#   $TOOLS_DIR/spire-agent-v1.13.3/spire-agent
#   $TOOLS_DIR/spire-server-v1.13.3/spire-server
#
# containerd 2.x is tested next to Debian's 1.6 (DESIGN.md §6: about 110 s
# to build); crictl drives containerd's Kubernetes CRI plugin (about 75 s);
# SPIRE's agent CLI (`spire-agent api fetch x509|jwt`) is a Workload API
# client none of us wrote (DESIGN.md §14: about 95 s). SPIRE is served as a
# program only, so it is the tool of a module of its own,
# integration/tools/spire-agent, which keeps its dependencies out of the
# product's go.mod.
# A directory is complete once its .done stamp exists, so an interrupted
# build is redone. Static, cgo-free builds (no_btrfs: no btrfs headers).
# nfpm builds the Debian package (`make deb`, about 20 s).
# SPIRE's server (DESIGN.md §16), for the two-host tests only: a module of
# its own too, integration/tools/spire-server, built with cgo for its
# SQLite datastore (about 10 min and 230 MB, once).
#
#   install-tools.sh [TOOL...]       build the tools (containerd, crictl,
#                                    nfpm, spire-agent, spire-server;
#                                    default all), each once
#   install-tools.sh --print TOOL    print where TOOL's binary is (or goes)
#
# Environment:
#   TOOLS_DIR   where the tools go (default /opt/northstar-tools)
#   GO          the go command (default go)
set -euo pipefail

readonly PROG=${0##*/}
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

TOOLS_DIR=${TOOLS_DIR:-/opt/northstar-tools}
GO=${GO:-go}
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
NFPM_VERSION=v2.45.2
SPIRE_VERSION=v1.13.3 # integration/tools/spire-agent/go.mod requires it
SPIRE_MODULE=$(cd "$(dirname "$0")/../integration/tools/spire-agent" && pwd)
SPIRE_SERVER_MODULE=$(cd "$(dirname "$0")/../integration/tools/spire-server" && pwd)

# build DIR [-C MODULE] PKG... : go install the packages (in MODULE's
# directory: "tool" for its tools) into DIR unless DIR/.done exists.
# Without cgo unless CGO_ENABLED=1 is set for the call.
build() {
	local dir=$1 start module=. cgo=${CGO_ENABLED:-0}
	shift
	if [[ $1 == -C ]]; then
		module=$2
		shift 2
	fi
	if [[ -e $dir/.done ]]; then
		log "cached: $dir"
		return 0
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	start=$SECONDS
	log "[$step/${#tools[@]}] building $* into $dir (once, cached after)"
	CGO_ENABLED=$cgo GOBIN=$dir "$(dirname "$0")/go-progress.sh" "${dir##*/}" 0 \
		"$GO" -C "$module" install -v -trimpath -tags no_btrfs "$@" ||
		die "go install $* failed"
	touch "$dir/.done"
	log "built $dir in $((SECONDS - start)) s"
}

# bin TOOL: the binary of TOOL.
bin() {
	case $1 in
	containerd) echo "$TOOLS_DIR/containerd-$CONTAINERD_VERSION/containerd" ;;
	crictl) echo "$TOOLS_DIR/crictl-$CRICTL_VERSION/crictl" ;;
	nfpm) echo "$TOOLS_DIR/nfpm-$NFPM_VERSION/nfpm" ;;
	spire-agent) echo "$TOOLS_DIR/spire-agent-$SPIRE_VERSION/spire-agent" ;;
	spire-server) echo "$TOOLS_DIR/spire-server-$SPIRE_VERSION/spire-server" ;;
	*) die "unknown tool $1: want containerd, crictl, nfpm, spire-agent or spire-server" ;;
	esac
}

if [[ ${1:-} == --print ]]; then
	[[ $# -eq 2 ]] || die "usage: ${PROG} --print TOOL"
	bin "$2"
	exit 0
fi
tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(containerd crictl nfpm spire-agent spire-server)
step=0
for tool in "${tools[@]}"; do
	step=$((step + 1))
	case $tool in
	containerd)
		build "$TOOLS_DIR/containerd-$CONTAINERD_VERSION" \
			"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
			"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
			"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
		;;
	crictl) build "$TOOLS_DIR/crictl-$CRICTL_VERSION" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" ;;
	nfpm) build "$TOOLS_DIR/nfpm-$NFPM_VERSION" "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" ;;
	spire-agent)
		grep -q "^	github.com/spiffe/spire $SPIRE_VERSION " "$SPIRE_MODULE/go.mod" ||
			die "$SPIRE_MODULE/go.mod does not require spire $SPIRE_VERSION"
		build "$TOOLS_DIR/spire-agent-$SPIRE_VERSION" -C "$SPIRE_MODULE" tool
		;;
	spire-server)
		grep -q "^	github.com/spiffe/spire $SPIRE_VERSION " "$SPIRE_SERVER_MODULE/go.mod" ||
			die "$SPIRE_SERVER_MODULE/go.mod does not require spire $SPIRE_VERSION"
		CGO_ENABLED=1 build "$TOOLS_DIR/spire-server-$SPIRE_VERSION" -C "$SPIRE_SERVER_MODULE" tool
		;;
	*) bin "$tool" >/dev/null ;;
	esac
done
chmod -R a+rX "$TOOLS_DIR"
