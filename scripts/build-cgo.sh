#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# build-cgo.sh CMD OUT [LDFLAGS]: builds ./cmd/CMD into OUT as make build,
# make deb and the tests need the commands with a fast path in C
# (containerd-shim-northstar-v2: shim/fastpath; northstar-agent-hook:
# hook/agenthook/fastpath): with cgo, linked static all the same, so that
# the environment a runtime passes cannot preload anything into them.
# LDFLAGS are added to the link's (make deb: "-s -w"). Run from anywhere.
set -euo pipefail
[[ $# -ge 2 && $# -le 3 ]] || { echo "usage: $0 CMD OUT [LDFLAGS]" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
cmd=$1 out=$2
[[ -d $top/cmd/$cmd ]] || { echo "$0: no command $cmd in $top/cmd" >&2; exit 2; }
[[ $out == /* ]] || out=$PWD/$out
cd "$top"
CGO_ENABLED=1 exec "${GO:-go}" build -trimpath -tags netgo,osusergo \
	-ldflags "${3:+$3 }-extldflags=-static" -o "$out" "./cmd/$cmd"
