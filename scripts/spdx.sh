#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# spdx.sh [--check] — puts the one-line licence header on every tracked Go
# file and shell script (the whole tree is Apache-2.0, see LICENSE), or
# with --check lists those without it and exits 1 if there are any.
# Idempotent: a file that has the line in its first three lines is left
# alone, so it can be run again after merging branches.
#
#   Go files:       "// SPDX-License-Identifier: Apache-2.0" and a blank
#                   line before everything (a //go:build line may follow:
#                   it needs only comments and blank lines before it);
#   shell scripts:  "# SPDX-License-Identifier: Apache-2.0" right after
#                   the #! line; the Makefile: as its first line.
set -euo pipefail

readonly PROG=${0##*/}
readonly ID="SPDX-License-Identifier: Apache-2.0"
cd "$(dirname "$0")/.."

check=0
[[ ${1:-} == --check ]] && check=1

has() { head -n 3 "$1" | grep -qF "$ID"; }

missing=()
while IFS= read -r f; do
	[[ -f $f ]] || continue
	has "$f" && continue
	if ((check)); then
		missing+=("$f")
		continue
	fi
	tmp=$(mktemp "$f.spdx.XXXXXX")
	case $f in
	*.go) { printf '// %s\n\n' "$ID" && cat "$f"; } >"$tmp" ;;
	Makefile) { printf '# %s\n' "$ID" && cat "$f"; } >"$tmp" ;;
	*)
		if head -n 1 "$f" | grep -q '^#!'; then
			{ head -n 1 "$f" && printf '# %s\n' "$ID" && tail -n +2 "$f"; } >"$tmp"
		else
			{ printf '# %s\n' "$ID" && cat "$f"; } >"$tmp"
		fi
		;;
	esac
	chmod --reference="$f" "$tmp"
	mv "$tmp" "$f"
done < <(
	git ls-files '*.go' '*.sh' Makefile .ci/run packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm
)

if ((check)) && [[ ${#missing[@]} -gt 0 ]]; then
	printf '%s: no "%s" line in:\n' "$PROG" "$ID" >&2
	printf '  %s\n' "${missing[@]}" >&2
	exit 1
fi
