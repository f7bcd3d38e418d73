#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# build-shim.sh OUT [LDFLAGS]: builds containerd-shim-northstar-v2 into OUT
# as make build, make deb and the tests need it: with cgo for its start's
# fast path in C (shim/fastpath), linked static all the same, so that the
# environment containerd passes cannot preload anything into it. LDFLAGS
# are added to the link's (make deb: "-s -w"). Run from anywhere.
set -euo pipefail
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 OUT [LDFLAGS]" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
out=$1
[[ $out == /* ]] || out=$PWD/$out
cd "$top"
CGO_ENABLED=1 exec "${GO:-go}" build -trimpath -tags netgo,osusergo \
	-ldflags "${2:+$2 }-extldflags=-static" -o "$out" ./cmd/containerd-shim-northstar-v2
