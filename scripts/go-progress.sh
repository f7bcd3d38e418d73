#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# go-progress.sh LABEL TOTAL GO-COMMAND... — runs a `go build -v` or
# `go install -v` and shows how far it is: "LABEL: 120/480 packages, 35 s",
# rewritten in place on a terminal, else a line every 10 s. TOTAL is what
# `go list -deps` counts (0: unknown); packages already in the build cache
# are not compiled again, so a warm build ends well below it. go's other
# output (downloads, errors) is kept and printed only if the command fails.
#
#   go-progress.sh "build northstar" 480 go build -v -o bin/ ./cmd/...
set -euo pipefail

readonly PROG=${0##*/}
[[ $# -ge 3 ]] || {
	printf '%s: error: usage: %s LABEL TOTAL GO-COMMAND...\n' "$PROG" "$PROG" >&2
	exit 2
}
label=$1 total=$2
shift 2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
tty=0
[[ -t 2 ]] && tty=1

# show [final]: one progress line.
show() {
	local of="" what
	[[ $total -gt 0 ]] && of="/$total"
	what="$n$of packages compiled"
	[[ $n -eq 0 && $downloads -gt 0 ]] && what="$downloads modules downloaded"
	[[ ${1:-} == final && $n -lt $total ]] && what+=" (the rest were in Go's build cache)"
	if ((tty)); then
		printf '\r  %s: %s, %d s\033[K' "$label" "$what" $((SECONDS - start)) >&2
		[[ ${1:-} == final ]] && printf '\n' >&2
	else
		printf '  %s: %s, %d s\n' "$label" "$what" $((SECONDS - start)) >&2
	fi
	return 0
}

n=0 downloads=0 last=$SECONDS rc=0
# go -v prints each package it compiles on stderr, one import path a line;
# the rest (go: downloading ..., compiler errors) is only kept.
while IFS= read -r line; do
	printf '%s\n' "$line" >>"$log"
	case $line in
	"go: downloading "*) downloads=$((downloads + 1)) ;;
	*[!A-Za-z0-9._~/-]* | "") continue ;;
	*) n=$((n + 1)) ;;
	esac
	if ((tty || SECONDS - last >= 10)); then
		show
		last=$SECONDS
	fi
done < <("$@" 2>&1 || echo "go-progress: exit $?")
if [[ $(tail -n 1 "$log") == "go-progress: exit "* ]]; then
	rc=$(tail -n 1 "$log" | sed 's/.*exit //')
	if ((tty)); then printf '\n' >&2; fi
	sed '$d' "$log" >&2
	printf '%s: error: %s failed (exit %s)\n' "$PROG" "$*" "$rc" >&2
	exit "$rc"
fi
show final
